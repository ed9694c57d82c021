package configs

import (
	"reflect"
	"strings"
)

// restartFields cannot be applied to a running process: they own sockets or
// files opened once at start. "token" is listed for the section being added
// or removed, which starts or stops a listener.
var restartFields = []string{"sip.listen", "media.webrtc.listen", "admin.listen", "store.path", "token.listen", "token",
	"sip.connections.max", "sip.connections.max_per_source", "sip.connections.setup_timeout", "sip.connections.idle_timeout", "media.bind", "media.rtp_ports",
	"media.workers", // the relay's workers are started once
	// The etcd client and the node's identity in the cluster are made once.
	"store.backend", "store.etcd.endpoints", "store.etcd.prefix", "store.etcd.username", "store.etcd.password",
	"store.etcd.ca_file", "store.etcd.cert_file", "store.etcd.key_file", "store.etcd.request_timeout", "cluster.node_name", "cluster.advertise", "cluster.lease_ttl"}

// Diff lists the field paths that differ between a and b, in schema order,
// named as in the file ("twilio.edges", "sip.lockout.window"). Lists of
// records are compared by key: "phones[alice].password", "phones[dave]" for
// an added or removed phone, and the list's own path when only the order
// changed. Secret fields are compared but only their paths are reported.
func Diff(a, b *Config) []string {
	if a == nil || b == nil {
		if a == b {
			return nil
		}
		return []string{"*"}
	}
	var out []string
	diffValue("", reflect.ValueOf(*a), reflect.ValueOf(*b), &out)
	return out
}

// NeedsRestart picks from changed the fields that only apply after a restart.
func NeedsRestart(changed []string) []string {
	var out []string
	for _, c := range changed {
		if contains(restartFields, c) {
			out = append(out, c)
		}
	}
	return out
}

type keyer interface{ Key() string }

var keyerType = reflect.TypeFor[keyer]()

func diffValue(path string, a, b reflect.Value, out *[]string) {
	switch a.Kind() {
	case reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil() || b.IsNil():
			*out = append(*out, path)
		default:
			diffValue(path, a.Elem(), b.Elem(), out)
		}
		return
	case reflect.Struct:
		if hasYAMLTags(a.Type()) {
			for i := 0; i < a.NumField(); i++ {
				tag := a.Type().Field(i).Tag.Get("yaml")
				if tag == "" || tag == "-" {
					continue
				}
				diffValue(join(path, tag), a.Field(i), b.Field(i), out)
			}
			return
		}
	case reflect.Slice:
		if a.Type().Elem().Implements(keyerType) {
			diffKeyed(path, a, b, out)
			return
		}
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*out = append(*out, path)
	}
}

// diffKeyed compares lists of records by their Key.
func diffKeyed(path string, a, b reflect.Value, out *[]string) {
	index := func(v reflect.Value) (map[string]reflect.Value, []string) {
		m := map[string]reflect.Value{}
		var order []string
		for i := 0; i < v.Len(); i++ {
			k := v.Index(i).Interface().(keyer).Key()
			m[k] = v.Index(i)
			order = append(order, k)
		}
		return m, order
	}
	am, aOrder := index(a)
	bm, bOrder := index(b)
	var common []string
	start := len(*out)
	for _, k := range aOrder {
		if _, ok := bm[k]; !ok {
			*out = append(*out, path+"["+k+"]")
		} else {
			common = append(common, k)
		}
	}
	for _, k := range bOrder {
		av, ok := am[k]
		if !ok {
			*out = append(*out, path+"["+k+"]")
			continue
		}
		diffValue(path+"["+k+"]", av, bm[k], out)
	}
	if len(*out) == start {
		var bCommon []string
		for _, k := range bOrder {
			if _, ok := am[k]; ok {
				bCommon = append(bCommon, k)
			}
		}
		if strings.Join(common, "\x00") != strings.Join(bCommon, "\x00") {
			*out = append(*out, path) // same records, new order (the first API key signs)
		}
	}
}

func hasYAMLTags(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Tag.Get("yaml") != "" {
			return true
		}
	}
	return false
}
