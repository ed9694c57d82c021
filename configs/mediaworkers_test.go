package configs

import (
	"reflect"
	"testing"
)

func TestMediaWorkers(t *testing.T) {
	tests := []struct {
		yaml string
		want int
	}{
		{minimal, 0},
		{minimal + "media:\n  workers: 0\n", 0},
		{minimal + "media:\n  workers: 3\n", 3},
		{minimal + "media:\n  workers: 256\n", 256},
	}
	for _, tt := range tests {
		c, err := Parse("c.yaml", []byte(tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if c.Media.Workers != tt.want {
			t.Errorf("%q: workers %d, want %d", tt.yaml, c.Media.Workers, tt.want)
		}
	}
	if got := NeedsRestart([]string{"media.timeout", "media.workers"}); !reflect.DeepEqual(got, []string{"media.workers"}) {
		t.Errorf("NeedsRestart = %v", got)
	}
}
