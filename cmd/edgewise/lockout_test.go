package main

import (
	"fmt"
	"testing"

	"github.com/edgewise-sip/edgewise/configs"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
)

// TestLockoutRoomForEveryPhone: the lockout's user table has room for every
// configured phone and as many guessed usernames, so a big site's logins do
// not evict one another (each eviction costs an allocation and the known
// sources of a real user).
func TestLockoutRoomForEveryPhone(t *testing.T) {
	for _, tc := range []struct{ phones, want int }{
		{0, lockout.DefaultMaxUsers},
		{100, lockout.DefaultMaxUsers},
		{lockout.DefaultMaxUsers, 2 * lockout.DefaultMaxUsers},
		{50_000, 100_000},
	} {
		cfg := &configs.Config{}
		for i := range tc.phones {
			cfg.Phones = append(cfg.Phones, configs.Phone{User: fmt.Sprintf("u%d", i)})
		}
		if got := lockoutSettings(cfg).MaxUsers; got != tc.want {
			t.Errorf("%d phones: MaxUsers %d, want %d", tc.phones, got, tc.want)
		}
	}
}
