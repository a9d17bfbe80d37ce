package policy

import (
	"bytes"
	"net/netip"
	"strconv"
)

// The message itself is read by sip.Parse (tolerant, allocation-free, fuzzed there). What it
// does not keep (the caller header, the Via count, Content-Length for framing) and what the
// agent reads out of header values (the Via sent-by and its parameters) is read here.

// headerIter walks the header lines of a message: the start line is skipped, blank lines
// before it too, and the walk ends at the empty line that ends the headers (or the input).
// Continuation lines of folded headers are skipped.
type headerIter struct {
	b   []byte
	off int
}

func newHeaderIter(b []byte) headerIter {
	off := 0
	for off < len(b) && (b[off] == '\r' || b[off] == '\n') {
		off++
	}
	_, next := line(b, off) // the start line
	return headerIter{b: b, off: next}
}

// next returns the next header's name and trimmed value.
func (it *headerIter) next() (name, val []byte, ok bool) {
	for it.off < len(it.b) {
		l, next := line(it.b, it.off)
		it.off = next
		if len(l) == 0 {
			it.off = len(it.b)
			return nil, nil, false
		}
		if l[0] == ' ' || l[0] == '\t' {
			continue
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			continue
		}
		return bytes.TrimRight(l[:colon], " \t"), bytes.TrimSpace(l[colon+1:]), true
	}
	return nil, nil, false
}

// line returns the line at off without its LF or CRLF, and where the next begins.
func line(b []byte, off int) ([]byte, int) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return b[off:], len(b)
	}
	l := b[off : off+i]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, off + i + 1
}

// maxCallerHeaders bounds how many caller headers a message may carry that are all checked.
const maxCallerHeaders = 4

// scan is what one pass over the headers finds beyond sip.Parse.
type scan struct {
	callers  [maxCallerHeaders][]byte
	ncallers int
	vias     int // Via header lines (sip.Parse keeps only sip.MaxVia of them)
}

func scanHeaders(b []byte, callerHeader string) scan {
	var s scan
	it := newHeaderIter(b)
	for {
		name, val, ok := it.next()
		if !ok {
			return s
		}
		switch {
		case len(name) == 1 && name[0]|0x20 == 'v', len(name) == 3 && bytes.EqualFold(name, []byte("via")):
			s.vias++
		case len(name) == len(callerHeader) && bytes.EqualFold(name, []byte(callerHeader)):
			if s.ncallers < maxCallerHeaders {
				s.callers[s.ncallers] = val
				s.ncallers++
			}
		}
	}
}

// contentLength returns the first Content-Length (or l) value of the header section b:
// -1 when there is none, -2 when it is not a number.
func contentLength(b []byte) int {
	it := newHeaderIter(b)
	for {
		name, val, ok := it.next()
		if !ok {
			return -1
		}
		if (len(name) == 1 && name[0]|0x20 == 'l') || bytes.EqualFold(name, []byte("content-length")) {
			if len(val) == 0 || len(val) > 9 {
				return -2
			}
			n := 0
			for _, c := range val {
				if c < '0' || c > '9' {
					return -2
				}
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
}

// parseIP reads an address as a proxy writes it: a bare IPv4 or IPv6 address, in brackets or
// not, with or without a port.
func parseIP(b []byte) (netip.Addr, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		b = b[1:end]
	} else if bytes.Count(b, []byte(":")) == 1 { // IPv4 with a port
		b = b[:bytes.IndexByte(b, ':')]
	}
	ip, err := netip.ParseAddr(string(b))
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// splitVias cuts a Via header value into its comma-separated via-parms, ignoring commas in
// quoted strings. first is the first of them, last the last.
func splitVias(v []byte) (first, last []byte) {
	start, inQuote := 0, false
	first = nil
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			inQuote = !inQuote
		case '\\':
			if inQuote {
				i++
			}
		case ',':
			if !inQuote {
				if first == nil {
					first = bytes.TrimSpace(v[:i])
				}
				start = i + 1
			}
		}
	}
	last = bytes.TrimSpace(v[min(start, len(v)):])
	if first == nil {
		first = last
	}
	return first, last
}

// via is one via-parm: "SIP/2.0/UDP host:port;param=value;...".
type via struct {
	host   []byte // sent-by host, IPv6 without brackets
	port   int    // sent-by port, 0 when absent or unreadable
	params []byte // from the first ';' on, or empty
}

func parseVia(v []byte) via {
	var out via
	// The protocol, then white space, then sent-by up to ';' or white space.
	i := 0
	for i < len(v) && v[i] != ' ' && v[i] != '\t' {
		i++
	}
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	j := i
	for j < len(v) && v[j] != ';' {
		j++
	}
	out.params = v[j:]
	sentBy := bytes.TrimSpace(v[i:j])
	hostPart, portPart := sentBy, []byte(nil)
	if len(sentBy) > 0 && sentBy[0] == '[' {
		if end := bytes.IndexByte(sentBy, ']'); end > 0 {
			hostPart = sentBy[1:end]
			if rest := sentBy[end+1:]; len(rest) > 1 && rest[0] == ':' {
				portPart = rest[1:]
			}
		}
	} else if c := bytes.IndexByte(sentBy, ':'); c >= 0 {
		hostPart, portPart = sentBy[:c], sentBy[c+1:]
	}
	out.host = bytes.TrimSpace(hostPart)
	if p, err := strconv.Atoi(string(bytes.TrimSpace(portPart))); err == nil && p > 0 && p < 65536 {
		out.port = p
	}
	return out
}

// param returns the value of via parameter name (case-insensitive) and whether it is there
// at all (a flag parameter such as rport has no value).
func (v via) param(name string) (val []byte, ok bool) {
	p := v.params
	for len(p) > 0 {
		if p[0] != ';' {
			return nil, false
		}
		p = p[1:]
		end := bytes.IndexByte(p, ';')
		if end < 0 {
			end = len(p)
		}
		kv := p[:end]
		p = p[end:]
		k, val, hasVal := bytes.Cut(kv, []byte("="))
		if bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			if !hasVal {
				return nil, true
			}
			return bytes.TrimSpace(val), true
		}
	}
	return nil, false
}

// viaSource returns the caller's address as the bottom-most Via says it: its received=
// parameter, else its sent-by host if that is an IP literal.
func viaSource(bottom []byte) (netip.Addr, bool) {
	v := parseVia(bottom)
	if r, ok := v.param("received"); ok {
		if ip, ok := parseIP(r); ok {
			return ip, true
		}
	}
	return parseIP(v.host)
}

// hasSchemePrefix reports whether u starts with sip:, sips: or tel: (any case).
func hasSchemePrefix(u []byte) bool {
	return hasPrefixFold(u, "sip:") || hasPrefixFold(u, "sips:") || hasPrefixFold(u, "tel:")
}

// uriChars reports whether u is non-empty and fit to be echoed inside <...> in a header: only
// visible ASCII, and none of the characters that would end the URI or the header early.
func uriChars(u []byte) bool {
	if len(u) == 0 {
		return false
	}
	for _, c := range u {
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

// isToken reports whether b is a non-empty RFC 3261 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
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

// dialled normalises the user part of the Request-URI for lookups: the visual separators a
// tel: URI may carry ("+49-900-123", "(0)") are dropped when what remains is a number;
// anything else is looked up as sent.
func dialled(user []byte) string {
	n := 0
	for _, c := range user {
		switch {
		case c >= '0' && c <= '9':
			n++
		case c == '+' || c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return string(user)
		}
	}
	if n == 0 {
		return string(user)
	}
	out := make([]byte, 0, len(user))
	for i, c := range user {
		if (c >= '0' && c <= '9') || (c == '+' && i == 0) {
			out = append(out, c)
		}
	}
	return string(out)
}
