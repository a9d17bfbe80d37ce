package eventio

import (
	"encoding/json"
	"unicode/utf8"
)

// decodeFlat decodes a JSON object whose values are all strings, numbers, booleans or null
// into rec, giving what encoding/json's Decoder with UseNumber gives (numbers as
// json.Number, the last of a repeated key). It returns false, with rec possibly partly
// filled, for anything else: nested values (an event's payload), strings with control bytes,
// invalid UTF-8 or surrogate escapes, malformed JSON, or bytes after the object; the caller
// then decodes the line with encoding/json, which takes three times as long (a million log
// lines spent 21 s there).
func decodeFlat(b []byte, rec Record) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := flatString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return false
		}
		var v any
		switch c := b[i]; {
		case c == '"':
			s, j, ok := flatString(b, i)
			if !ok {
				return false
			}
			v, i = s, j
		case c == 't' && hasPrefix(b[i:], "true"):
			v, i = true, i+4
		case c == 'f' && hasPrefix(b[i:], "false"):
			v, i = false, i+5
		case c == 'n' && hasPrefix(b[i:], "null"):
			v, i = nil, i+4
		case c == '-' || c >= '0' && c <= '9':
			j, ok := flatNumber(b, i)
			if !ok {
				return false
			}
			v, i = json.Number(b[i:j]), j
		default:
			return false // an array or object
		}
		rec[key] = v
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// flatNumber returns the end of the JSON number at b[i:] (the grammar encoding/json takes).
func flatNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	return i, true
}

// flatString decodes the JSON string at b[i:] and returns it and the index after it.
func flatString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	i++
	start := i
	// Most strings have no escape: one scan, one copy.
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return string(b[start:i]), i + 1, true
		case c == '\\':
			return flatEscaped(b, start, i)
		case c < 0x20:
			return "", 0, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return "", 0, false
			}
			i += n
		}
	}
	return "", 0, false
}

// flatEscaped goes on with a string from its first escape at b[i].
func flatEscaped(b []byte, start, i int) (string, int, bool) {
	out := make([]byte, 0, len(b)-start)
	out = append(out, b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return string(out), i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return "", 0, false
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(b, i+2)
				if !ok || r >= 0xd800 && r < 0xe000 {
					return "", 0, false // surrogates: encoding/json pairs or replaces them
				}
				out = utf8.AppendRune(out, r)
				i += 4
			default:
				return "", 0, false
			}
			i += 2
		case c < 0x20:
			return "", 0, false
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return "", 0, false
			}
			out = append(out, b[i:i+n]...)
			i += n
		}
	}
	return "", 0, false
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
