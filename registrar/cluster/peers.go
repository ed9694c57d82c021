package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A phone's NAT pinhole is open toward the node it registered through, so
// a node ringing a phone registered elsewhere sends the fork to that node,
// which rings the phone from its own socket (as a Path header would,
// RFC 3327). The fork between nodes carries PeerHeader, signed with a key
// the nodes share through etcd (secret, created by the first node), so a
// stranger cannot pass as a node and reach the phones.

// PeerHeader marks and signs an INVITE one node sends another:
// "node=<name>;ts=<unix seconds>;sig=<hex HMAC-SHA256>".
const PeerHeader = "X-Edgewise-Peer"

// peerSkew bounds how old (or early) a signature may be.
const peerSkew = time.Minute

// loadSecret reads the cluster's signing key, creating it if no node has.
func (o *Owners) loadSecret(ctx context.Context) error {
	key := o.st.set.Prefix + "secret"
	fresh := make([]byte, 32)
	_, _ = rand.Read(fresh)
	res, err := o.st.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, hex.EncodeToString(fresh))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("cluster secret: %w", err)
	}
	secret := fresh
	if !res.Succeeded {
		kvs := res.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 {
			return errors.New("cluster secret: missing")
		}
		if secret, err = hex.DecodeString(string(kvs[0].Value)); err != nil || len(secret) < 16 {
			return errors.New("cluster secret: unreadable")
		}
	}
	o.mu.Lock()
	o.secret = secret
	o.mu.Unlock()
	return nil
}

// Self is this node's name.
func (o *Owners) Self() string { return o.st.set.Node }

// PeerAddr is the SIP address of another live node.
func (o *Owners) PeerAddr(node string) (netip.AddrPort, bool) {
	if node == o.st.set.Node {
		return netip.AddrPort{}, false
	}
	o.mu.Lock()
	a, ok := o.nodes[node]
	o.mu.Unlock()
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a)
	return ap, err == nil
}

// Sign returns the PeerHeader value for a request identified by fields
// (the caller's choice, the same on both ends: Call-ID, CSeq, user).
func (o *Owners) Sign(fields ...string) string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	return "node=" + o.st.set.Node + ";ts=" + ts + ";sig=" + o.mac(o.st.set.Node, ts, fields)
}

// Verify checks a PeerHeader value from src and returns the node that sent
// it: a live node, from its own address, signed with the cluster's key
// within a minute.
func (o *Owners) Verify(value string, src netip.Addr, fields ...string) (string, error) {
	var node, ts, sig string
	for _, kv := range strings.Split(value, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "node":
			node = v
		case "ts":
			ts = v
		case "sig":
			sig = v
		}
	}
	if node == "" || ts == "" || sig == "" {
		return "", errors.New("malformed " + PeerHeader)
	}
	addr, ok := o.PeerAddr(node)
	if !ok {
		return "", fmt.Errorf("%q is not a live node", node)
	}
	if addr.Addr().Unmap() != src.Unmap() {
		return "", fmt.Errorf("node %q is at %s, not %s", node, addr.Addr(), src)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > peerSkew {
		return "", errors.New("stale or malformed timestamp")
	}
	if !hmac.Equal([]byte(sig), []byte(o.mac(node, ts, fields))) {
		return "", errors.New("bad signature")
	}
	return node, nil
}

func (o *Owners) mac(node, ts string, fields []string) string {
	o.mu.Lock()
	secret := o.secret
	o.mu.Unlock()
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(node + "\n" + ts))
	for _, f := range fields {
		m.Write([]byte("\n" + f))
	}
	return hex.EncodeToString(m.Sum(nil))
}
