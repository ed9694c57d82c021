package configs

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Secret is a resolved secret value. It prints as "[redacted]" in every
// format verb, in JSON and in slog, so it cannot leak through a log line or
// the admin API by accident; call Value to use it.
type Secret string

const redacted = "[redacted]"

// Value returns the secret itself.
func (s Secret) Value() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString hides the value from %#v too.
func (s Secret) GoString() string { return `configs.Secret("` + s.String() + `")` }

// MarshalJSON hides the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// LogValue hides the value from slog handlers.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText hides the value (used by encoders that prefer text).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// envRef matches a whole-value environment reference.
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// secret decodes the secret field key and its key_file sibling from f.
// It reports problems itself and returns whether either was given.
// Values never appear in messages: only variable names and file paths do.
func (f *fields) secret(key string, dst *Secret) (present bool) {
	fileKey := key + "_file"
	var inline, file string
	hasInline := f.str(key, &inline)
	hasFile := f.str(fileKey, &file)
	switch {
	case hasInline && hasFile:
		f.d.problem(f.sub(fileKey), "", "give either %s or %s, not both", key, fileKey)
		return true
	case hasInline:
		v, ok := f.d.expand(f.sub(key), inline)
		if ok {
			*dst = Secret(v)
		}
		return true
	case hasFile:
		v, ok := f.d.readSecretFile(f.sub(fileKey), file)
		if ok {
			*dst = Secret(v)
		}
		return true
	}
	return false
}

// expand resolves a secret given inline: "${VAR}" from the environment, or
// a literal. It reports unset and empty variables by name.
func (d *decoder) expand(path, v string) (string, bool) {
	if m := envRef.FindStringSubmatch(v); m != nil {
		val, ok := os.LookupEnv(m[1])
		switch {
		case !ok:
			d.problem(path, "export it or use "+lastKey(path)+"_file", "environment variable %s is not set", m[1])
			return "", false
		case val == "":
			d.problem(path, "", "environment variable %s is empty", m[1])
			return "", false
		}
		return val, true
	}
	if strings.Contains(v, "${") {
		d.problem(path, `write the reference as the whole value, e.g. "${ALICE_PASSWORD}"`, "${...} is only expanded when it is the whole value")
		return "", false
	}
	if v == "" {
		d.problem(path, "", "must not be empty")
		return "", false
	}
	return v, true
}

// readSecretFile reads a *_file secret, relative to the config's directory,
// dropping the trailing newline editors and `echo` add.
func (d *decoder) readSecretFile(path, name string) (string, bool) {
	if name == "" {
		d.problem(path, "", "must not be empty")
		return "", false
	}
	b, err := readSmallFile(d.resolvePath(name))
	if err != nil {
		// The error names the path and the reason, never the content.
		d.problem(path, "", "cannot read: %v", unwrapPathErr(err))
		return "", false
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		d.problem(path, "", "file %s is empty", name)
		return "", false
	}
	return v, true
}

// maxSecretFile bounds a secret file: a secret is a line, and a typo such as
// /dev/zero must not eat memory.
const maxSecretFile = 64 << 10

// readSmallFile reads a regular file of at most maxSecretFile bytes. Devices
// and FIFOs are refused, since reading them could block a reload forever.
func readSmallFile(name string) ([]byte, error) { return readFileMax(name, maxSecretFile) }

// readFileMax is readSmallFile with another bound.
func readFileMax(name string, maxSize int) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(maxSize)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSize {
		return nil, fmt.Errorf("%s: larger than %d KiB", name, maxSize>>10)
	}
	return b, nil
}

// resolvePath makes a relative path relative to the config file's directory
// and absolute, so a later chdir does not change what it points at.
func (d *decoder) resolvePath(p string) string {
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.dir, p)
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}

// unwrapPathErr shortens "open /x: no such file or directory" to keep the
// message readable; the path stays in it.
func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// lastKey returns the final field name of a path ("phones[1].password" → "password").
func lastKey(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}
