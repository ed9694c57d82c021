package sdp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseCrypto(t *testing.T) {
	key30 := "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz" // 30 bytes
	for _, tc := range []struct {
		in      string
		tag     int
		suite   string
		keyLen  int
		wantErr string
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30, 1, "AES_CM_128_HMAC_SHA1_80", 30, ""},
		{"2 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^20", 2, "AES_CM_128_HMAC_SHA1_32", 30, ""},
		{"3 AEAD_AES_128_GCM inline:" + strings.TrimRight("MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3OA==", "="), 3, "AEAD_AES_128_GCM", 28, ""},
		{"1 AES_CM_128_HMAC_SHA1_80", 0, "", 0, "want"},
		{"x AES_CM_128_HMAC_SHA1_80 inline:" + key30, 0, "", 0, "tag"},
		{"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + key30, 0, "", 0, "tag"},
		{"1 AES-CM inline:" + key30, 0, "", 0, "not a name"},
		{"1 AES_CM_128_HMAC_SHA1_80 key:" + key30, 0, "", 0, "not inline"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4", 0, "", 0, "MKI"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + ";inline:" + key30, 0, "", 0, "more than one key"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + " KDR=1", 0, "", 0, "session parameter"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|forever", 0, "", 0, "lifetime"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:%%%", 0, "", 0, "base64"},
	} {
		c, err := ParseCrypto(tc.in)
		if tc.wantErr != "" {
			if !errors.Is(err, ErrCrypto) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.Tag != tc.tag || c.Suite != tc.suite || len(c.Key) != tc.keyLen {
			t.Errorf("%q: %v %d %s %d bytes", tc.in, err, c.Tag, c.Suite, len(c.Key))
		}
	}
}

func FuzzParseCrypto(f *testing.F) {
	for _, s := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20",
		"9 AEAD_AES_256_GCM inline:AAAA",
		"1 X inline:|||",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, err := ParseCrypto(v)
		if err != nil {
			return
		}
		back, err := ParseCrypto(c.attrValue())
		if err != nil || back.Tag != c.Tag || back.Suite != c.Suite || !bytes.Equal(back.Key, c.Key) {
			t.Fatalf("%q → %q does not read back: %v", v, c.attrValue(), err)
		}
	})
}
