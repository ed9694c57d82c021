package digest

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAuthorization(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Authorization
		err  error
	}{
		{
			name: "typical SIP phone",
			in:   `Digest username="alice", realm="edgewise", nonce="abc", uri="sip:edgewise", response="0123", algorithm=MD5, cnonce="xyz", qop=auth, nc=00000001`,
			want: Authorization{Username: "alice", Realm: "edgewise", Nonce: "abc", URI: "sip:edgewise", Response: "0123", Algorithm: "MD5", CNonce: "xyz", QOP: "auth", NC: "00000001"},
		},
		{
			name: "case-insensitive scheme and names, no spaces",
			in:   `digest USERNAME="bob",Realm="r",NONCE="n",Uri="sip:x",RESPONSE="ff"`,
			want: Authorization{Username: "bob", Realm: "r", Nonce: "n", URI: "sip:x", Response: "ff"},
		},
		{
			name: "commas and escaped quotes inside quoted strings",
			in:   `Digest username="a,b", realm="say \"hi\", ok", nonce="n", opaque="x\\y"`,
			want: Authorization{Username: "a,b", Realm: `say "hi", ok`, Nonce: "n", Opaque: `x\y`},
		},
		{
			name: "empty list elements and folded whitespace",
			in:   "Digest ,, username = \"u\" ,\r\n\t realm=\"r\",,",
			want: Authorization{Username: "u", Realm: "r"},
		},
		{
			name: "unquoted uri and quoted qop from lenient phones",
			in:   `Digest username="u", uri=sip:edgewise;transport=udp, qop="auth"`,
			want: Authorization{Username: "u", URI: "sip:edgewise;transport=udp", QOP: "auth"},
		},
		{
			name: "unknown parameters ignored",
			in:   `Digest username="u", foo="bar,baz", x=1`,
			want: Authorization{Username: "u"},
		},
		{
			name: "empty quoted value",
			in:   `Digest username=""`,
			want: Authorization{},
		},
		{name: "basic scheme", in: `Basic YWxhZGRpbjpvcGVuc2VzYW1l`, err: ErrNotDigest},
		{name: "scheme glued to params", in: `Digestusername="a"`, err: ErrNotDigest},
		{name: "empty", in: ``, err: ErrNotDigest},
		{name: "duplicate parameter", in: `Digest nonce="a", NONCE="b"`, err: ErrMalformed},
		{name: "unterminated quote", in: `Digest username="alice`, err: ErrMalformed},
		{name: "trailing backslash", in: `Digest username="alice\`, err: ErrMalformed},
		{name: "missing equals", in: `Digest username "alice"`, err: ErrMalformed},
		{name: "missing value", in: `Digest username=, realm="r"`, err: ErrMalformed},
		{name: "junk after quoted value", in: `Digest username="a"b, realm="r"`, err: ErrMalformed},
		{name: "control character in quotes", in: "Digest username=\"a\x00b\"", err: ErrMalformed},
		{name: "parameter name missing", in: `Digest ="a"`, err: ErrMalformed},
		{name: "too many parameters", in: "Digest " + strings.Repeat("a=b,", maxParams+1), err: ErrMalformed},
		{name: "too long", in: "Digest username=\"" + strings.Repeat("a", maxValueLen) + "\"", err: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseAuthorization checks that no input panics, that errors are one of
// the two documented kinds, and that parsed values never carry raw line breaks
// or NULs that could be echoed into a header.
func FuzzParseAuthorization(f *testing.F) {
	f.Add(`Digest username="alice", realm="edgewise", nonce="abc", uri="sip:edgewise", response="0123", algorithm=MD5, cnonce="xyz", qop=auth, nc=00000001`)
	f.Add(`Digest username="a\"b,c", realm=""`)
	f.Add("Digest ,,,")
	f.Fuzz(func(t *testing.T, in string) {
		a, err := ParseAuthorization(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotDigest) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for _, v := range []string{a.Username, a.Realm, a.Nonce, a.URI, a.Response, a.Algorithm, a.CNonce, a.Opaque, a.QOP, a.NC, a.UserHash} {
			if strings.ContainsAny(v, "\x00\r\n") {
				t.Fatalf("value %q carries a control character", v)
			}
			if len(v) > len(in) {
				t.Fatalf("value %q longer than input", v)
			}
		}
	})
}
