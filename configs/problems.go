package configs

import (
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a config file, located by line and field path.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Path string `json:"path"` // e.g. "twilio.edges[1]", "phones[2].password"; "" for syntax errors
	Msg  string `json:"msg"`
	Hint string `json:"hint,omitempty"`
}

// String gives "FILE:LINE: field.path: problem (hint: ...)".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(p.Line))
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Hint != "" {
		b.WriteString(" (hint: ")
		b.WriteString(p.Hint)
		b.WriteByte(')')
	}
	return b.String()
}

// Problems is every problem found in one file, sorted by line. It is the
// error Load and Parse return when a file is refused.
type Problems []Problem

// Error prints one problem per line.
func (ps Problems) Error() string {
	return strings.Join(ps.Strings(), "\n")
}

// Strings gives each problem's String.
func (ps Problems) Strings() []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// sorted orders by line; problems on one line keep the order they were found.
func (ps Problems) sorted() Problems {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return ps
}
