// Package sip captures SIP probes: a tolerant, allocation-free field extractor, the responder
// that answers like a PBX in responsive mode, and the UDP, TCP and TLS listeners that turn
// every message they receive into an event.
package sip

import (
	"bytes"
)

// Kind says what the first line of a message looked like.
type Kind uint8

const (
	// Garbage is anything whose first line is neither a SIP request nor a SIP response line,
	// including empty input. Such packets are still recorded, with empty fields.
	Garbage Kind = iota
	Request
	Response
)

// MaxVia is how many Via header lines a message keeps for echoing in replies.
const MaxVia = 16

// Message is what Parse could read. Its byte slices point into the parsed buffer, so they are
// valid only while that buffer is.
type Message struct {
	Kind       Kind
	Method     []byte // request method, as sent
	RequestURI []byte
	StatusCode int // responses only

	From, To, CallID, CSeq, UserAgent, Contact []byte // first of each, trimmed
	// Authorization and ProxyAuthorization are the first of each header (credentials that
	// answer a challenge; see AuthParam). They have no compact form.
	Authorization, ProxyAuthorization []byte

	Via  [MaxVia][]byte // Via header values in order
	NVia int

	// ContentLength is the Content-Length value, or -1 if absent or unreadable.
	ContentLength int
	// HeaderLen is the length of the start line and headers including the empty line that
	// ends them, or 0 if the input holds no such empty line.
	HeaderLen int

	seen uint8 // bit per single-valued header: only the first of each counts, even if blank
}

const (
	seenFrom uint8 = 1 << iota
	seenTo
	seenCallID
	seenCSeq
	seenAgent
	seenContact
	seenAuth
	seenProxyAuth
)

// Parse extracts what it can from b. It never fails and never panics: unreadable input comes
// back as Kind Garbage, a message with missing headers as a Message with nil fields.
func Parse(b []byte) Message {
	m := Message{ContentLength: -1}
	off := skipBlankLines(b)
	line, next := nextLine(b, off)
	m.Kind = m.parseStartLine(line)
	if m.Kind == Garbage {
		return m
	}
	var last *[]byte // header that a folded continuation line extends
	lastStart := 0
	for next < len(b) {
		start := next
		line, next = nextLine(b, start)
		if len(line) == 0 {
			m.HeaderLen = next
			return m
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last != nil {
				*last = bytes.TrimSpace(b[lastStart : start+len(line)])
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			last = nil
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t")
		valStart := start + colon + 1
		val := bytes.TrimSpace(line[colon+1:])
		last = m.header(name, val)
		lastStart = valStart
	}
	return m
}

// header stores val if name is a header we keep, and returns where it was stored.
func (m *Message) header(name, val []byte) *[]byte {
	var dst *[]byte
	var bit uint8
	switch len(name) {
	case 1:
		switch name[0] | 0x20 {
		case 'v':
			return m.addVia(val)
		case 'f':
			dst, bit = &m.From, seenFrom
		case 't':
			dst, bit = &m.To, seenTo
		case 'i':
			dst, bit = &m.CallID, seenCallID
		case 'm':
			dst, bit = &m.Contact, seenContact
		case 'l':
			m.setContentLength(val)
			return nil
		}
	case 2:
		if bytes.EqualFold(name, []byte("to")) {
			dst, bit = &m.To, seenTo
		}
	case 3:
		if bytes.EqualFold(name, []byte("via")) {
			return m.addVia(val)
		}
	case 4:
		switch {
		case bytes.EqualFold(name, []byte("from")):
			dst, bit = &m.From, seenFrom
		case bytes.EqualFold(name, []byte("cseq")):
			dst, bit = &m.CSeq, seenCSeq
		}
	case 7:
		switch {
		case bytes.EqualFold(name, []byte("call-id")):
			dst, bit = &m.CallID, seenCallID
		case bytes.EqualFold(name, []byte("contact")):
			dst, bit = &m.Contact, seenContact
		}
	case 10:
		if bytes.EqualFold(name, []byte("user-agent")) {
			dst, bit = &m.UserAgent, seenAgent
		}
	case 13:
		if bytes.EqualFold(name, []byte("authorization")) {
			dst, bit = &m.Authorization, seenAuth
		}
	case 14:
		if bytes.EqualFold(name, []byte("content-length")) {
			m.setContentLength(val)
			return nil
		}
	case 19:
		if bytes.EqualFold(name, []byte("proxy-authorization")) {
			dst, bit = &m.ProxyAuthorization, seenProxyAuth
		}
	}
	if dst == nil || m.seen&bit != 0 {
		return nil // not kept, or not the first of its kind
	}
	m.seen |= bit
	*dst = val
	return dst
}

func (m *Message) addVia(val []byte) *[]byte {
	if m.NVia == MaxVia {
		return nil
	}
	m.Via[m.NVia] = val
	m.NVia++
	return &m.Via[m.NVia-1]
}

func (m *Message) setContentLength(val []byte) {
	if m.ContentLength >= 0 {
		return
	}
	n, ok := atoi(val)
	if ok {
		m.ContentLength = n
	}
}

// atoi reads a non-negative decimal that fits comfortably in an int.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func (m *Message) parseStartLine(line []byte) Kind {
	first, rest := cutSpace(line)
	if len(first) == 0 {
		return Garbage
	}
	if isVersion(first) {
		code, _ := cutSpace(rest)
		if len(code) != 3 {
			return Garbage
		}
		n, ok := atoi(code)
		if !ok || n < 100 {
			return Garbage
		}
		m.StatusCode = n
		return Response
	}
	uri, rest := cutSpace(rest)
	version, _ := cutSpace(rest)
	if len(uri) == 0 || !isVersion(version) || len(first) > 32 || !isToken(first) {
		return Garbage
	}
	m.Method, m.RequestURI = first, uri
	return Request
}

func isVersion(b []byte) bool {
	return len(b) >= 4 && bytes.EqualFold(b[:4], []byte("SIP/"))
}

// isToken reports whether b is made only of RFC 3261 token characters.
func isToken(b []byte) bool {
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("-.!%*_+`'~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// cutSpace splits off the first space-separated word, skipping runs of spaces and tabs.
func cutSpace(b []byte) (word, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], b[j:]
}

// skipBlankLines skips the CRLFs that TCP keep-alives and sloppy senders put before a message.
func skipBlankLines(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// nextLine returns the line starting at off without its CRLF or LF, and where the next begins.
func nextLine(b []byte, off int) (line []byte, next int) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return b[off:], len(b)
	}
	line = b[off : off+i]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, off + i + 1
}

// CalledNumber applies the contract's rule: the user part of the To URI, else of the
// Request-URI, else NOT_FOUND. Garbage has no number at all.
func (m *Message) CalledNumber() []byte {
	if m.Kind == Garbage {
		return nil
	}
	if u := UserPart(m.To); len(u) > 0 {
		return u
	}
	if u := UserPart(m.RequestURI); len(u) > 0 {
		return u
	}
	return notFoundBytes
}

// notFoundBytes is NOT_FOUND, made once: callers read it, never write it.
var notFoundBytes = []byte(notFound)

// Agent returns the first User-Agent value, or NOT_FOUND when missing or blank.
func (m *Message) Agent() []byte {
	if m.Kind == Garbage {
		return nil
	}
	if len(m.UserAgent) == 0 {
		return notFoundBytes
	}
	return m.UserAgent
}

const notFound = "NOT_FOUND"

// UserPart returns the user of the SIP, SIPS or tel URI in v, which may be a bare URI or a
// header value with a display name and parameters. Passwords and user parameters are cut off.
func UserPart(v []byte) []byte {
	// A bare URI ends at whitespace; inside <...> keep spaces, so injection attempts in the
	// user part are recorded whole.
	stop := ";?> \t"
	if lt := bytes.IndexByte(v, '<'); lt >= 0 {
		stop = ";?>"
		v = v[lt+1:]
		if gt := bytes.IndexByte(v, '>'); gt >= 0 {
			v = v[:gt]
		}
	}
	v = bytes.TrimSpace(v)
	var tel bool
	switch {
	case hasPrefixFold(v, "sip:"):
		v = v[4:]
	case hasPrefixFold(v, "sips:"):
		v = v[5:]
	case hasPrefixFold(v, "tel:"):
		v, tel = v[4:], true
	default:
		return nil
	}
	if !tel {
		at := bytes.IndexByte(v, '@')
		if at < 0 {
			return nil
		}
		v = v[:at]
		if c := bytes.IndexByte(v, ':'); c >= 0 {
			v = v[:c]
		}
	}
	if s := bytes.IndexAny(v, stop); s >= 0 {
		v = v[:s]
	}
	return v
}

// AuthParam returns the value of the parameter name (compared without case) in credentials v,
// such as those of an Authorization header: `Digest username="100", nonce="abc", ...`, or nil.
// It is tolerant: the scheme may be missing, the quotes too, and there may be blanks around
// the '='. A quoted value ends at the next unescaped quote (the escapes are kept), or at the
// end of v.
func AuthParam(v []byte, name string) []byte {
	for len(v) > 0 {
		// Skip separators, then read a parameter name, or the scheme, which has no '='.
		i := 0
		for i < len(v) && (v[i] == ',' || v[i] == ' ' || v[i] == '\t') {
			i++
		}
		if i == len(v) {
			return nil
		}
		j := i
		for j < len(v) && v[j] != '=' && v[j] != ',' && v[j] != ' ' && v[j] != '\t' && v[j] != '"' {
			j++
		}
		key := v[i:j]
		for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
			j++
		}
		if j == i || j == len(v) || v[j] != '=' {
			if j == i { // a stray quote: skip it
				j++
			}
			v = v[j:]
			continue
		}
		j++ // the '='
		for j < len(v) && (v[j] == ' ' || v[j] == '\t') {
			j++
		}
		var val []byte
		if j < len(v) && v[j] == '"' {
			k := j + 1
			for k < len(v) && v[k] != '"' {
				if v[k] == '\\' {
					k++
				}
				k++
			}
			k = min(k, len(v))
			val, v = v[j+1:k], v[min(k+1, len(v)):]
		} else {
			k := j
			for k < len(v) && v[k] != ',' && v[k] != ' ' && v[k] != '\t' {
				k++
			}
			val, v = v[j:k], v[k:]
		}
		if bytes.EqualFold(key, []byte(name)) {
			return val
		}
	}
	return nil
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}
