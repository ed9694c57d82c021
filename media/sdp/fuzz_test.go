package sdp

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzRewrite: any input either fails with ErrInvalid or yields a
// description that parses, points the carried audio at the target, and
// rewrites to itself. Seeds live in testdata/fuzz/FuzzRewrite.
func FuzzRewrite(f *testing.F) {
	f.Add([]byte(phoneOffer))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := Rewrite(body, target)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		info, err := Parse(out)
		if err != nil {
			t.Fatalf("rewritten SDP does not parse: %v\n%q", err, out)
		}
		m, ok := info.Audio()
		if !ok {
			t.Fatalf("rewritten SDP lost its audio:\n%q", out)
		}
		if m.Active() && m.RTP.IsValid() && m.RTP.Port() != target.Port {
			t.Fatalf("audio at %v, want port %d", m.RTP, target.Port)
		}
		if m.Active() && m.RTP.IsValid() && m.RTP.Addr() != target.Addr {
			t.Fatalf("audio at %v, want %v", m.RTP, target.Addr)
		}
		again, err := Rewrite(out, target)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent (%v):\n%q\n%q", err, out, again)
		}
	})
}
