package sipserver

import (
	"bytes"
	"testing"
)

// FuzzFraming feeds arbitrary bytes to the functions that look at messages
// before sipgo's parser does (classify, rawResponse, contentLength,
// isKeepalive): none may panic, and a response built from raw headers must be
// a single well-formed header section.
func FuzzFraming(f *testing.F) {
	f.Add([]byte("REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("INVITE sip:x SIP/2.0\r\nl: 12\r\nv: a\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Fuzz(func(t *testing.T, p []byte) {
		isKeepalive(p)
		classify(p)
		if end := bytes.Index(p, []byte("\r\n\r\n")); end >= 0 {
			contentLength(p[:end+2])
		}
		res := rawResponse(p, 400, "Bad Request", "ua", "")
		if res == nil {
			return
		}
		if !bytes.HasPrefix(res, []byte("SIP/2.0 400 Bad Request\r\n")) || !bytes.HasSuffix(res, []byte("\r\n\r\n")) {
			t.Fatalf("bad response %q", res)
		}
		if bytes.Count(res, []byte("\r\n\r\n")) != 1 || bytes.ContainsAny(bytes.ReplaceAll(res, []byte("\r\n"), nil), "\r\n\x00") {
			t.Fatalf("response carries stray line breaks or NULs: %q", res)
		}
	})
}
