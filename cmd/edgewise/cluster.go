package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/cluster"
	"github.com/edgewise-sip/edgewise/registrar/location"
)

// sharedTable opens the cluster's etcd and a table over it. run must run
// for the life of the table (it writes the node's changes and applies the
// others'); close it after run returns.
func sharedTable(ctx context.Context, cfg *configs.Config, logger *slog.Logger) (t *location.Table, st *cluster.Store, run func(context.Context) error, err error) {
	s, err := clusterSettings(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	st, state, rev, err := cluster.Open(ctx, s, logger.With("component", "cluster"))
	if err != nil {
		return nil, nil, nil, err
	}
	t = location.NewShared(logger.With("component", "location"), location.Settings{}, st, state)
	n := 0
	for _, bs := range state {
		n += len(bs)
	}
	logger.Info("bindings loaded from etcd", "node", s.Node, "endpoints", s.Endpoints, "users", len(state), "bindings", n)
	return t, st, func(ctx context.Context) error { return st.Run(ctx, t, rev) }, nil
}

func clusterSettings(cfg *configs.Config) (cluster.Settings, error) {
	e := cfg.Store.Etcd
	s := cluster.Settings{
		Endpoints: e.Endpoints, Prefix: e.Prefix, Node: cfg.Cluster.NodeName, Advertise: cfg.Cluster.Advertise,
		Username: e.Username, Password: e.Password.Value(), RequestTimeout: e.RequestTimeout,
	}
	if e.CAFile == "" && e.CertFile == "" {
		return s, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return s, fmt.Errorf("store.etcd.ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return s, fmt.Errorf("store.etcd.ca_file: %s holds no PEM certificate", e.CAFile)
		}
		tc.RootCAs = roots
	}
	if e.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return s, fmt.Errorf("store.etcd.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	s.TLS = tc
	return s, nil
}
