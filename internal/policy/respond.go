package policy

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/dialtrap/dialtrap/internal/sip"
)

// allowHeader lists what the agent answers.
const allowHeader = "INVITE, ACK, CANCEL, OPTIONS, MESSAGE"

// reply builds the responses to one request. Every value echoed from the request goes
// through appendClean, so no CR, LF or other control character from the sender reaches the
// wire inside a header.
type reply struct {
	m   *sip.Message
	src netip.AddrPort
	udp bool
}

// answer is one response: its status, the Contact of a redirect, the X-Dialtrap-Decision
// value, and the Reason header (cause 0: none).
type answer struct {
	code       int
	phrase     string
	contact    []byte
	decision   []byte
	cause      int
	v          verdict
	failClosed bool
}

func (r *reply) build(out []byte, code int, phrase string) []byte {
	return r.write(out, &answer{code: code, phrase: phrase})
}

func (r *reply) write(out []byte, ans *answer) []byte {
	m := r.m
	b := append(out, "SIP/2.0 "...)
	b = strconv.AppendInt(b, int64(ans.code), 10)
	b = append(b, ' ')
	b = append(b, ans.phrase...)
	b = append(b, "\r\n"...)
	for i := range m.NVia {
		b = append(b, "Via: "...)
		if i == 0 {
			b = r.appendTopVia(b, m.Via[0])
		} else {
			b = appendClean(b, m.Via[i])
		}
		b = append(b, "\r\n"...)
	}
	b = append(b, "From: "...)
	b = appendClean(b, m.From)
	b = append(b, "\r\nTo: "...)
	b = appendClean(b, m.To)
	if !sip.HasTag(m.To) {
		b = append(b, ";tag="...)
		b = appendTag(b, m)
	}
	b = append(b, "\r\nCall-ID: "...)
	b = appendClean(b, m.CallID)
	b = append(b, "\r\nCSeq: "...)
	b = appendClean(b, m.CSeq)
	b = append(b, "\r\n"...)
	if ans.contact != nil {
		b = append(b, "Contact: <"...)
		b = append(b, ans.contact...) // checked by uriChars: nothing that ends the URI or the line
		b = append(b, ">\r\n"...)
	}
	if ans.code == 405 || (ans.code == 200 && string(m.Method) == "OPTIONS") {
		b = append(b, "Allow: "+allowHeader+"\r\n"...)
	}
	if ans.cause != 0 {
		b = append(b, "Reason: SIP;cause="...)
		b = strconv.AppendInt(b, int64(ans.cause), 10)
		b = append(b, ";text=\""...)
		b = appendReasonText(b, ans.v, ans.failClosed)
		b = append(b, "\"\r\n"...)
	}
	if ans.decision != nil {
		b = append(b, "X-Dialtrap-Decision: "...)
		b = append(b, ans.decision...)
		b = append(b, "\r\n"...)
	}
	return append(b, "Content-Length: 0\r\n\r\n"...)
}

// appendClean appends a header value from the request with every control character (a CR
// or LF of a folded header, or one smuggled in) turned into a space.
func appendClean(b, v []byte) []byte {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// topVia is the first via-parm of the request's top Via header.
func (r *reply) topVia() via {
	first, _ := splitVias(r.m.Via[0])
	return parseVia(first)
}

// appendTopVia echoes the top Via header. Its first via-parm gets received= when the sender
// is not where sent-by says (RFC 3261 18.2.1), or when it asked for rport, which is then
// filled in (RFC 3581); an existing received= is replaced.
func (r *reply) appendTopVia(b, header []byte) []byte {
	first, _ := splitVias(header)
	rest := header[len(first):]
	if i := bytes.Index(header, first); i >= 0 {
		b = appendClean(b, header[:i])
		rest = header[i+len(first):]
	}
	v := parseVia(first)
	b = appendClean(b, first[:len(first)-len(v.params)])
	_, rport := v.param("rport")
	ip := r.src.Addr().Unmap().WithZone("")
	hostIP, isIP := parseIP(v.host)
	needReceived := rport || !isIP || hostIP != ip
	p := v.params
	for len(p) > 0 && p[0] == ';' {
		end := bytes.IndexByte(p[1:], ';')
		if end < 0 {
			end = len(p)
		} else {
			end++
		}
		kv := p[1:end]
		p = p[end:]
		k, _, _ := bytes.Cut(kv, []byte("="))
		k = bytes.TrimSpace(k)
		switch {
		case bytes.EqualFold(k, []byte("received")):
			continue // ours replaces it
		case bytes.EqualFold(k, []byte("rport")):
			b = append(b, ";rport="...)
			b = strconv.AppendUint(b, uint64(r.src.Port()), 10)
			continue
		}
		b = append(b, ';')
		b = appendClean(b, kv)
	}
	if needReceived {
		b = append(b, ";received="...)
		b = ip.AppendTo(b)
	}
	return appendClean(b, rest)
}

// dest is where a UDP reply goes: the sender's address, and its port when it asked for rport
// (RFC 3581); otherwise the sent-by port, or 5060 (RFC 3261 18.2.2). Over TCP the reply goes
// back on the connection.
func (r *reply) dest() netip.AddrPort {
	if !r.udp {
		return r.src
	}
	v := r.topVia()
	if _, rport := v.param("rport"); rport {
		return r.src
	}
	port := uint16(5060)
	if v.port > 0 {
		port = uint16(v.port)
	}
	return netip.AddrPortFrom(r.src.Addr(), port)
}

// appendTag appends a To tag made from the request's Call-ID, From and top Via (FNV-1a):
// stateless, yet a retransmitted request gets the very same response.
func appendTag(b []byte, m *sip.Message) []byte {
	h := uint64(14695981039346656037)
	for _, part := range [][]byte{m.CallID, m.From, m.Via[0]} {
		for _, c := range part {
			h ^= uint64(c)
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	const hexdigits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		b = append(b, hexdigits[(h>>uint(i))&0xf])
	}
	return b
}
