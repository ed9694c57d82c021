package token

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeSnippet keeps the README's five-line page example in step with
// the helper: five lines, importing only names the module exports, using
// only options it reads.
func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```js\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no js block")
	}
	snippet := string(m[1])
	if n := strings.Count(snippet, "\n"); n != 5 {
		t.Errorf("snippet has %d lines, want 5", n)
	}
	imp := regexp.MustCompile(`import \{([^}]*)\} from "[^"]*` + regexp.QuoteMeta(PathSDK) + `"`).FindStringSubmatch(snippet)
	if imp == nil {
		t.Fatalf("snippet does not import from %s:\n%s", PathSDK, snippet)
	}
	js := string(sdkJS)
	for _, name := range strings.Split(imp[1], ",") {
		name = strings.TrimSpace(name)
		if !regexp.MustCompile(`export (async )?(function|class) ` + name + `\b`).MatchString(js) {
			t.Errorf("snippet imports %q, which edgewise.js does not export", name)
		}
	}
	for _, opt := range []string{"providers", "edges"} {
		if !strings.Contains(snippet, opt) || !strings.Contains(js, "options."+opt) {
			t.Errorf("option %q: in snippet %v, read by helper %v", opt,
				strings.Contains(snippet, opt), strings.Contains(js, "options."+opt))
		}
	}
	if !strings.Contains(snippet, PathToken) {
		t.Errorf("snippet does not point at %s", PathToken)
	}
}
