package configs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the config file at path. A file that cannot be read
// gives a plain wrapped error; a file that is wrong gives Problems.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes, defaults and validates data read from path. path names the
// file in problems and anchors relative paths (store.path, *_file). On any
// problem it returns every problem found as Problems and no Config.
func Parse(path string, data []byte) (*Config, error) {
	d := &decoder{file: path, dir: filepath.Dir(path), lines: map[string]int{}, bad: map[string]bool{}}
	sum := sha256.Sum256(data)
	cfg := defaults()
	cfg.Path = path
	cfg.Hash = hex.EncodeToString(sum[:])
	cfg.Version = cfg.Hash[:12]

	root, ok := d.parseYAML(data)
	if !ok {
		return nil, d.probs.sorted()
	}
	if d.decode(root, cfg) {
		d.validate(cfg)
	}
	if len(d.probs) > 0 {
		return nil, d.probs.sorted()
	}
	return cfg, nil
}

// decoder walks the YAML node tree into a Config, remembering the line of
// every field so validation can point at it, and collecting every problem.
type decoder struct {
	file  string
	dir   string
	probs Problems
	lines map[string]int  // field path → line of its key (or list item)
	bad   map[string]bool // paths that already have a problem: one per path
}

// problem reports at the line of path, or of its nearest ancestor that is in
// the file (line 1 when even the top-level section is missing).
func (d *decoder) problem(path, hint, format string, args ...any) {
	d.problemLine(d.lineOf(path), path, hint, format, args...)
}

func (d *decoder) problemLine(line int, path, hint, format string, args ...any) {
	if d.bad[path] {
		return // the first problem of a field explains it; follow-ups are noise
	}
	d.bad[path] = true
	d.probs = append(d.probs, Problem{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; p = parent(p) {
		if l, ok := d.lines[p]; ok {
			return l
		}
	}
	return 1
}

// parent drops the last ".field" or "[i]" of a path.
func parent(path string) string {
	i := max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['))
	if i < 0 {
		return ""
	}
	return path[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML parses exactly one document. A syntax error becomes a problem;
// the parser stops at the first one, so there is only ever one.
func (d *decoder) parseYAML(data []byte) (*yaml.Node, bool) {
	if bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) {
		// yaml.v3 would decode it, but then lines no longer match what
		// line-oriented tools show; no one means to write config in UTF-16.
		d.problemLine(1, "", "save the file as UTF-8", "file is UTF-16")
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, true // empty file: every required field is reported missing
		}
		d.syntax(err, data)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			d.syntax(err, data)
		} else {
			d.problemLine(extra.Line, "", "", "only one YAML document is allowed")
		}
		return nil, false
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0], true
	}
	return &doc, true
}

// parserProblems are yaml's parser (not scanner) errors. yaml.v3 reports
// their line 0-based (the scanner's are 1-based), so they need one added to
// point at the construct that is not closed.
var parserProblems = []string{
	"did not find expected <stream-start>", "did not find expected <document start>",
	"did not find expected node content", "did not find expected '-' indicator",
	"did not find expected key", "did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"found undefined tag handle", "found duplicate %YAML directive", "found incompatible YAML document",
	"found duplicate %TAG directive",
}

func (d *decoder) syntax(err error, data []byte) {
	msg := err.Error()
	line := 1
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if contains(parserProblems, msg) {
			line++
		}
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	// An error at end of input may be reported past the last line.
	line = max(1, min(line, countLines(data)))
	d.problemLine(line, "", "", "invalid YAML: %s", msg)
}

// countLines counts lines the way YAML does: \r\n, \r, \n, NEL, LS and PS
// all end a line.
func countLines(data []byte) int {
	n := 1
	for i := 0; i < len(data); i++ {
		switch {
		case data[i] == '\n':
			n++
		case data[i] == '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			n++
		case bytes.HasPrefix(data[i:], []byte("\u0085")), bytes.HasPrefix(data[i:], []byte("\u2028")), bytes.HasPrefix(data[i:], []byte("\u2029")):
			n++
		}
	}
	return n
}

// resolve follows aliases (*name) to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 32; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if isNull(n) {
		return "empty"
	}
	return "a value"
}

// fields is one decoded YAML mapping: its known keys and their value nodes.
// A key whose value is null counts as absent, so `realm:` keeps the default.
type fields struct {
	d    *decoder
	path string
	vals map[string]*yaml.Node
	ok   bool // false when the node was not a mapping (already reported)
}

// mapping checks n is a mapping whose keys are all in known, reporting
// unknown keys (with the closest known key as a hint) and duplicates.
func (d *decoder) mapping(n *yaml.Node, path string, known ...string) *fields {
	f := &fields{d: d, path: path, vals: map[string]*yaml.Node{}, ok: true}
	n = resolve(n)
	if isNull(n) {
		return f
	}
	if n.Kind != yaml.MappingNode {
		d.problemLine(d.lineFor(path, n), path, "", "must be a mapping, not %s", kindName(n))
		f.ok = false
		return f
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.problemLine(k.Line, path, "", "keys must be plain names")
			continue
		}
		p := join(path, k.Value)
		if k.Value == "<<" {
			d.problemLine(k.Line, p, "repeat the fields instead", "YAML merge keys are not supported")
			continue
		}
		if !contains(known, k.Value) {
			d.problemLine(k.Line, p, keyHint(k.Value, known), "unknown key")
			continue
		}
		if _, dup := f.vals[k.Value]; dup {
			d.problemLine(k.Line, p, "", "duplicate key (first at line %d)", d.lines[p])
			continue
		}
		d.lines[p] = k.Line
		f.vals[k.Value] = v
	}
	return f
}

func (f *fields) sub(key string) string { return join(f.path, key) }

// node returns the value node of key, nil when absent or null.
func (f *fields) node(key string) *yaml.Node {
	n := f.vals[key]
	if isNull(n) {
		return nil
	}
	return n
}

// has reports whether key was given with a non-null value.
func (f *fields) has(key string) bool { return f.node(key) != nil }

// lineFor is where a problem with path's value is reported: the line the
// field or list entry was written on, which for an alias (*name) is where
// it is used rather than where the anchor is.
func (d *decoder) lineFor(path string, n *yaml.Node) int {
	if l, ok := d.lines[path]; ok {
		return l
	}
	return n.Line
}

func (d *decoder) scalar(path string, n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.problemLine(d.lineFor(path, n), path, "", "must be %s, not %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// str decodes a string field; it returns whether the key was given at all,
// even when its value was the wrong kind.
func (f *fields) str(key string, dst *string) bool {
	n := f.node(key)
	if n == nil {
		return false
	}
	if s, ok := f.d.scalar(f.sub(key), n, "a string"); ok {
		*dst = s
	}
	return true
}

// dur decodes a Go duration ("4s", "1m30s"). A bare number is refused: the
// unit is what makes "600" vs "600ms" unambiguous.
func (f *fields) dur(key string, dst *time.Duration) bool {
	n := f.node(key)
	if n == nil {
		return false
	}
	p := f.sub(key)
	s, ok := f.d.scalar(p, n, "a duration")
	if !ok {
		return true
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		hint := `a number with a unit, e.g. "4s", "1m", "1h30m"`
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			hint = fmt.Sprintf("add a unit, e.g. %ss", s)
		}
		f.d.problemLine(f.d.lineFor(p, n), p, hint, "%q is not a duration", s)
		return true
	}
	*dst = v
	return true
}

func (f *fields) integer(key string, dst *int) bool {
	n := f.node(key)
	if n == nil {
		return false
	}
	p := f.sub(key)
	s, ok := f.d.scalar(p, n, "an integer")
	if !ok {
		return true
	}
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil || n.ShortTag() != "!!int" {
		f.d.problemLine(f.d.lineFor(p, n), p, "", "%q is not an integer", s)
		return true
	}
	*dst = int(v)
	return true
}

func (f *fields) boolean(key string, dst *bool) bool {
	n := f.node(key)
	if n == nil {
		return false
	}
	p := f.sub(key)
	s, ok := f.d.scalar(p, n, "true or false")
	if !ok {
		return true
	}
	v, err := strconv.ParseBool(s)
	if err != nil || n.ShortTag() != "!!bool" {
		f.d.problemLine(f.d.lineFor(p, n), p, "", "%q is not true or false", s)
		return true
	}
	*dst = v
	return true
}

// item is one decoded list entry with its own path, so problems can name
// the index even when other entries were skipped as malformed.
type item struct {
	Path  string
	Value string
	Node  *yaml.Node
}

// list returns the entries of a list field. A scalar where a list belongs is
// refused with a hint rather than silently wrapped.
func (f *fields) list(key string) ([]item, bool) {
	n := f.node(key)
	if n == nil {
		return nil, false
	}
	p := f.sub(key)
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf("write a list, e.g. [%s]", n.Value)
		}
		f.d.problemLine(f.d.lineFor(p, n), p, hint, "must be a list, not %s", kindName(n))
		return nil, true
	}
	out := make([]item, 0, len(n.Content))
	for i, c := range n.Content {
		ip := index(p, i)
		f.d.lines[ip] = c.Line // the alias's own line when c is an alias
		c = resolve(c)
		out = append(out, item{Path: ip, Node: c, Value: c.Value})
	}
	return out, true
}

// emptyList reports whether key was given as an explicit empty list.
func (f *fields) emptyList(key string) bool {
	n := f.node(key)
	return n != nil && n.Kind == yaml.SequenceNode && len(n.Content) == 0
}

// strList is list with every entry required to be a scalar.
func (f *fields) strList(key string) ([]item, bool) {
	items, ok := f.list(key)
	out := items[:0]
	for _, it := range items {
		if it.Node.Kind != yaml.ScalarNode || isNull(it.Node) {
			f.d.problemLine(f.d.lineFor(it.Path, it.Node), it.Path, "", "must be a string, not %s", kindName(it.Node))
			continue
		}
		out = append(out, it)
	}
	return out, ok
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
