// Package payload finds attack payloads that scanners put in SIP requests — SQL injection
// aimed at the billing and CDR databases behind a PBX, shell commands, format strings, and
// script for the web pages that show call logs — in the Request-URI and the headers. The rules
// are a small list of substrings, matched case-insensitively after percent escapes are
// undone; testdata/corpus.tsv holds the true and false positives they are measured on.
package payload

import (
	"bytes"
)

// Kinds of payload.
const (
	SQLi   = "sqli"
	Shell  = "shell"
	Format = "format"
	Script = "script"
)

// Finding is one payload: its kind and where it was (request-uri, or a header's name in
// lower case).
type Finding struct {
	Kind  string
	Where string
}

type rule struct {
	kind string
	pat  string // lower case
}

// rules are substrings no honest SIP value holds. Each is specific on its own: a lone quote
// or semicolon is not (display names and parameters have them).
var rules = []rule{
	{SQLi, "' or '"}, {SQLi, "' or 1"}, {SQLi, "\" or \""}, {SQLi, "' or \""}, {SQLi, " or 1=1"}, {SQLi, "'or'"},
	{SQLi, "union select"}, {SQLi, "union all select"}, {SQLi, "'; drop "}, {SQLi, "';drop "}, {SQLi, "; drop table"}, {SQLi, ";drop table"},
	{SQLi, "sleep("}, {SQLi, "benchmark("}, {SQLi, "waitfor delay"}, {SQLi, "xp_cmdshell"}, {SQLi, "information_schema"},
	{SQLi, "' and '"}, {SQLi, "'--"}, {SQLi, "' --"}, {SQLi, "';--"}, {SQLi, "' #"}, {SQLi, "select * from"},
	{SQLi, "' and 1="}, {SQLi, "or 'x'='x"},
	{Shell, "$("}, {Shell, "${ifs}"}, {Shell, ";wget "}, {Shell, "; wget "}, {Shell, "|wget "}, {Shell, "&& wget"},
	{Shell, ";curl "}, {Shell, "; curl "}, {Shell, "|curl "}, {Shell, "&& curl"}, {Shell, "/bin/sh"}, {Shell, "/bin/bash"},
	{Shell, "| sh"}, {Shell, "|sh"}, {Shell, "nc -e"}, {Shell, "/etc/passwd"}, {Shell, ";cat "}, {Shell, "; cat "},
	{Shell, "`id`"}, {Shell, "`uname"}, {Shell, ";id;"}, {Shell, "chmod +x"}, {Shell, "tftp -g"},
	{Format, "%n"}, {Format, "%s%s"}, {Format, "%x%x"}, {Format, "%p%p"}, {Format, "%08x"}, {Format, "%s%p"},
	{Script, "<script"}, {Script, "javascript:"}, {Script, "onerror="}, {Script, "onload="}, {Script, "<img "},
	{Script, "<svg"}, {Script, "<iframe"}, {Script, "alert("}, {Script, "document.cookie"},
}

// maxScan bounds how much of one value is looked at.
const maxScan = 1024

// Detect returns the payloads in raw (a request: start line and headers; the body is not
// looked at), at most one per kind and place, appended to out.
func Detect(raw []byte, out []Finding) []Finding {
	start := len(out)
	first := bytes.IndexByte(raw, '\n')
	if first < 0 {
		first = len(raw)
	}
	// The Request-URI: between the first and the last space of the start line.
	startLine := bytes.TrimRight(raw[:first], "\r")
	if i, j := bytes.IndexByte(startLine, ' '), bytes.LastIndexByte(startLine, ' '); i > 0 && j > i {
		out = scan(startLine[i+1:j], "request-uri", out, start)
	}
	// Header lines, up to the empty line that ends them.
	rest := raw[min(first+1, len(raw)):]
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		line := rest
		if nl >= 0 {
			line, rest = rest[:nl], rest[nl+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		out = scan(line[colon+1:], headerName(bytes.TrimSpace(line[:colon])), out, start)
	}
	return out
}

// headers are the places named in a Finding besides "request-uri" and "other".
var headers = []string{"from", "to", "contact", "user-agent", "call-id", "via", "cseq", "subject", "authorization",
	"proxy-authorization", "refer-to", "referred-by", "p-asserted-identity", "remote-party-id", "diversion"}

// headerName is a header's name for a Finding: lower case, compact forms expanded; headers
// outside the list are "other" (no allocation for what a scanner makes up).
func headerName(n []byte) string {
	for _, h := range headers {
		if len(n) == len(h) && bytes.EqualFold(n, []byte(h)) {
			return h
		}
	}
	if len(n) == 1 {
		switch n[0] | 0x20 {
		case 'f':
			return "from"
		case 't':
			return "to"
		case 'm':
			return "contact"
		case 'i':
			return "call-id"
		case 'v':
			return "via"
		case 's':
			return "subject"
		}
	}
	return "other"
}

// scan matches the rules against v, case-insensitively and with percent escapes undone.
// Findings already in out[start:] (the same kind in another header of the same name) are
// not added again. Most values hold no escape and are read once, in place; one with a '%'
// is decoded and read again.
func scan(v []byte, where string, out []Finding, start int) []Finding {
	var found [4]bool
	s := v[:min(len(v), maxScan)]
	out, escaped := match(s, where, out, start, &found)
	if !escaped {
		return out
	}
	var buf [maxScan]byte
	n := 0
	for i := 0; i < len(v) && n < len(buf); i++ {
		c := v[i]
		if c == '%' && i+2 < len(v) {
			if h, ok := unhex(v[i+1]); ok {
				if l, ok := unhex(v[i+2]); ok {
					c = h<<4 | l
					i += 2
				}
			}
		}
		buf[n] = c
		n++
	}
	out, _ = match(buf[:n], where, out, start, &found)
	// A format string is looked for as sent: with escapes undone, "%25n" would be one.
	for _, r := range rules {
		if r.kind == Format && !found[2] && containsFold(s, r.pat) {
			found[2] = true
			out = add(out, start, Finding{Kind: Format, Where: where})
		}
	}
	return out
}

// match tries every position of s against the rules that start with its two bytes (so a
// value is read once, whatever the number of rules) and says whether s holds a '%' escape.
func match(s []byte, where string, out []Finding, start int, found *[4]bool) ([]Finding, bool) {
	escaped := false
	for i := 0; i+1 < len(s); i++ {
		list := byPair[uint16(lower[s[i]])<<8|uint16(lower[s[i+1]])]
		switch list {
		case 0:
			continue
		case escapeList:
			escaped = true
			continue
		}
		for _, ri := range pairLists[list] {
			r := rules[ri]
			k := kindIndex(r.kind)
			if !found[k] && hasPrefixFold(s[i:], r.pat) {
				found[k] = true
				out = add(out, start, Finding{Kind: r.kind, Where: where})
			}
		}
	}
	return out, escaped
}

// add appends f unless out[start:] holds it: a message of twenty injected headers of one
// name is one finding there, and leaves room for the others.
func add(out []Finding, start int, f Finding) []Finding {
	for _, g := range out[start:] {
		if g == f {
			return out
		}
	}
	return append(out, f)
}

// escapeList marks, in byPair, the pairs that start with '%'.
const escapeList = 255

// lower maps a byte to its ASCII lower case.
var lower = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] += 'a' - 'A'
		}
	}
	return t
}()

// byPair indexes, by their first two bytes, the rules (not format strings) whose pattern
// starts with them: most positions of a value start no pattern and cost one table read,
// which halved the time of a scan compared with an index by the first byte.
//
// A pair starting with '%' is marked escapeList instead: the one pass that matches also
// finds the values whose escapes must be undone (no format rule is in the index).
var byPair, pairLists = func() (idx [1 << 16]uint8, lists [][]uint8) {
	for b := range 256 {
		idx['%'<<8|b] = escapeList
	}
	lists = [][]uint8{nil} // 0: no rule
	for i, r := range rules {
		if r.kind == Format {
			continue
		}
		k := uint16(r.pat[0])<<8 | uint16(r.pat[1])
		if idx[k] == escapeList || len(lists) == escapeList {
			panic("payload: a rule other than a format string starts with %, or too many pairs")
		}
		if idx[k] == 0 {
			idx[k] = uint8(len(lists))
			lists = append(lists, nil)
		}
		lists[idx[k]] = append(lists[idx[k]], uint8(i))
	}
	return idx, lists
}()

// hasPrefixFold reports whether s starts with pat (lower case), ASCII case-insensitively.
func hasPrefixFold(s []byte, pat string) bool {
	if len(s) < len(pat) {
		return false
	}
	for j := 0; j < len(pat); j++ {
		if lower[s[j]] != pat[j] {
			return false
		}
	}
	return true
}

// containsFold reports whether s contains sub (lower case), ASCII case-insensitively.
func containsFold(s []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for ; j < len(sub); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != sub[j] {
				break
			}
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

func kindIndex(k string) int {
	switch k {
	case SQLi:
		return 0
	case Shell:
		return 1
	case Format:
		return 2
	}
	return 3
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
