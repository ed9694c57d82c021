package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks Parse never panics and always answers with exactly one
// of a Config or a non-empty, well-formed Problems.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"demo.yaml", "production.example.yaml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte(liveBase))
	dir := f.TempDir() // relative *_file paths resolve here, never in the repo
	path := filepath.Join(dir, "fuzz.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(path, data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("cfg %v err %v: want exactly one", cfg, err)
		}
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T %v is not a non-empty Problems", err, err)
			}
			lines := countLines(data)
			for i, p := range ps {
				if p.Line < 1 || p.Line > lines || p.File != path || p.Msg == "" {
					t.Fatalf("bad problem %+v (file has %d lines)", p, lines)
				}
				if i > 0 && ps[i-1].Line > p.Line {
					t.Fatalf("problems not sorted by line: %v", ps)
				}
			}
			return
		}
		again, err := Parse(path, data)
		if err != nil || !reflect.DeepEqual(cfg, again) {
			t.Fatalf("Parse is not deterministic: %v", err)
		}
	})
}
