package relaytest

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// The ng control protocol (rtpengine's) carries bencoded dictionaries:
// strings "4:spam", integers "i42e", lists "l...e", dictionaries "d...e" with
// keys sorted. Decoded strings are Go strings, integers int64.

func bencode(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := encodeValue(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encodeValue(b *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case string:
		b.WriteString(strconv.Itoa(len(x)))
		b.WriteByte(':')
		b.WriteString(x)
	case []byte:
		b.WriteString(strconv.Itoa(len(x)))
		b.WriteByte(':')
		b.Write(x)
	case int:
		fmt.Fprintf(b, "i%de", x)
	case int64:
		fmt.Fprintf(b, "i%de", x)
	case []string:
		b.WriteByte('l')
		for _, s := range x {
			encodeValue(b, s)
		}
		b.WriteByte('e')
	case []any:
		b.WriteByte('l')
		for _, e := range x {
			if err := encodeValue(b, e); err != nil {
				return err
			}
		}
		b.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('d')
		for _, k := range keys {
			encodeValue(b, k)
			if err := encodeValue(b, x[k]); err != nil {
				return err
			}
		}
		b.WriteByte('e')
	default:
		return fmt.Errorf("bencode: cannot encode %T", v)
	}
	return nil
}

var errBencode = errors.New("bencode: malformed input")

// bdecode decodes one value and returns the rest of the input.
func bdecode(in []byte) (any, []byte, error) {
	if len(in) == 0 {
		return nil, nil, errBencode
	}
	switch c := in[0]; {
	case c == 'i':
		end := bytes.IndexByte(in, 'e')
		if end < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.ParseInt(string(in[1:end]), 10, 64)
		if err != nil {
			return nil, nil, errBencode
		}
		return n, in[end+1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(in, ':')
		if colon < 0 {
			return nil, nil, errBencode
		}
		n, err := strconv.Atoi(string(in[:colon]))
		if err != nil || n < 0 || colon+1+n > len(in) {
			return nil, nil, errBencode
		}
		return string(in[colon+1 : colon+1+n]), in[colon+1+n:], nil
	case c == 'l':
		var list []any
		rest := in[1:]
		for len(rest) > 0 && rest[0] != 'e' {
			v, r, err := bdecode(rest)
			if err != nil {
				return nil, nil, err
			}
			list = append(list, v)
			rest = r
		}
		if len(rest) == 0 {
			return nil, nil, errBencode
		}
		return list, rest[1:], nil
	case c == 'd':
		m := map[string]any{}
		rest := in[1:]
		for len(rest) > 0 && rest[0] != 'e' {
			k, r, err := bdecode(rest)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, errBencode
			}
			v, r2, err := bdecode(r)
			if err != nil {
				return nil, nil, err
			}
			m[ks] = v
			rest = r2
		}
		if len(rest) == 0 {
			return nil, nil, errBencode
		}
		return m, rest[1:], nil
	}
	return nil, nil, errBencode
}

// decodeDict decodes a whole message that must be one dictionary.
func decodeDict(in []byte) (map[string]any, error) {
	v, rest, err := bdecode(in)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok || len(rest) != 0 {
		return nil, errBencode
	}
	return m, nil
}
