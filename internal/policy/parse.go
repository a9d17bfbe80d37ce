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

// maxCallerHeaders bounds how many caller headers are checked: the last ones, since proxies
// append theirs after any the caller sent.
const maxCallerHeaders = 4

// scan is what one pass over the headers finds beyond sip.Parse.
type scan struct {
	callers  [maxCallerHeaders][]byte // a ring: the last maxCallerHeaders of them
	ncallers int                      // all seen
	vias     int                      // Via header lines (sip.Parse keeps only sip.MaxVia of them)
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
			s.callers[s.ncallers%maxCallerHeaders] = val
			s.ncallers++
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

// maxViaAddrs bounds the addresses one Via may make us check: its sent-by host and its
// received= parameters (the proxy's, and any the caller wrote itself).
const maxViaAddrs = 3

// viaAddrs appends every address a via-parm names: each received= parameter (a proxy that
// marks a Via appends its own after any the sender wrote) and the sent-by host if it is an IP
// literal. Checking them all means a value the caller forged can only add to what is checked.
func viaAddrs(out []netip.Addr, raw []byte) []netip.Addr {
	v := parseVia(raw)
	n := 0
	add := func(ip netip.Addr) {
		if n < maxViaAddrs {
			out = append(out, ip)
			n++
		}
	}
	p := v.params
	for len(p) > 0 && p[0] == ';' {
		p = p[1:]
		end := bytes.IndexByte(p, ';')
		if end < 0 {
			end = len(p)
		}
		k, val, _ := bytes.Cut(p[:end], []byte("="))
		p = p[end:]
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("received")) {
			if ip, ok := parseIP(bytes.TrimSpace(val)); ok {
				add(ip)
			}
		}
	}
	if ip, ok := parseIP(v.host); ok {
		add(ip)
	}
	return out
}

// maxTrustedHops bounds Config.TrustedHops.
const maxTrustedHops = 8

// nthVia returns the via-parm at index n from the top, across Via header lines and the
// comma-separated values within them.
func nthVia(lines [][]byte, n int) ([]byte, bool) {
	for _, line := range lines {
		start, inQuote := 0, false
		for i := 0; i <= len(line); i++ {
			if i < len(line) {
				switch line[i] {
				case '"':
					inQuote = !inQuote
					continue
				case '\\':
					if inQuote {
						i++
					}
					continue
				case ',':
					if inQuote {
						continue
					}
				default:
					continue
				}
			}
			if n == 0 {
				return bytes.TrimSpace(line[start:i]), true
			}
			n--
			start = i + 1
		}
	}
	return nil, false
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

// dialled normalises the user part of the Request-URI for lookups: percent escapes are
// undone (%34 is 4, as RFC 3261 says and carriers decode); a user part with letters is a
// name and is returned as it is (never looked up: no stored number has letters); otherwise
// the number is its digits, with a leading '+' and without a "(0)" after it: separators,
// '#', '*', ',' and '/' do not change what a carrier dials.
func dialled(user []byte) string {
	d := percentDecode(user)
	n := 0
	for _, c := range d {
		switch {
		case c >= '0' && c <= '9':
			n++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			return string(d) // a name (alice, service): never a number the store could hold
		}
	}
	if n == 0 {
		return string(d)
	}
	// "+49 (0)30 ..." writes the national trunk prefix that an international call leaves out.
	if len(d) > 0 && d[0] == '+' {
		if i := bytes.Index(d, []byte("(0)")); i > 0 {
			d = append(d[:i:i], d[i+3:]...)
		}
	}
	// What a carrier dials is the digits: visual separators, and the '#', '*', ',' or '/'
	// a dial string may carry, do not change the target.
	out := make([]byte, 0, len(d))
	for i, c := range d {
		if (c >= '0' && c <= '9') || (c == '+' && i == 0) {
			out = append(out, c)
		}
	}
	return string(out)
}

// percentDecode undoes RFC 3261's escapes in a user part (%34 is '4'); a malformed escape
// stays as it is.
func percentDecode(b []byte) []byte {
	if bytes.IndexByte(b, '%') < 0 {
		return bytes.Clone(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '%' && i+2 < len(b) {
			if h, ok1 := unhex(b[i+1]); ok1 {
				if l, ok2 := unhex(b[i+2]); ok2 {
					out = append(out, h<<4|l)
					i += 2
					continue
				}
			}
		}
		out = append(out, b[i])
	}
	return out
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
