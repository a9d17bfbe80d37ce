package sip

import (
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"strconv"
)

// DefaultPersona is the Server header of responsive mode: a banner scanners see every day.
const DefaultPersona = "Asterisk PBX 18.20.0"

const (
	allowHeader     = "INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE, UPDATE, PRACK"
	acceptHeader    = "application/sdp"
	supportedHeader = "replaces, timer"
)

// Responder builds the replies of responsive mode. The zero value answers with DefaultPersona.
type Responder struct {
	Persona string
	// TagFor, when set, gives the To tag of replies to a source (the reply budget's, which a
	// source that echoes it proves it receives our packets); else tags are random.
	TagFor func(netip.Addr) []byte
	// NonceFor, when set, gives the nonce of the 401 challenge to a REGISTER from a source
	// (the reply budget's, which a source that echoes it proves it receives our packets);
	// else nonces are random. NonceOK, when set, says whether a nonce in a request's
	// credentials is one we gave that source and still valid; else any nonce is.
	NonceFor func(netip.Addr) []byte
	NonceOK  func(netip.Addr, []byte) bool

	tag   func() []byte // To-tag source; tests make it fixed
	nonce func() []byte // nonce source; tests make it fixed
}

type status struct {
	code   int
	reason string
}

// statuses returns the replies a PBX would give to method, in order. INVITE fails after 100
// Trying so scanners move on to their next prefix and reveal more numbers. REGISTER is
// challenged (401 with a nonce) unless it answers a challenge of ours (authorized), whatever
// the password: then it succeeds, so scanners go on to dial. The challenge is what lets a
// UDP source prove its address by echoing the nonce (see budget.go).
func statuses(method []byte, authorized bool) []status {
	switch string(method) {
	case "INVITE":
		return []status{{100, "Trying"}, {404, "Not Found"}}
	case "ACK":
		return nil // ACK is never answered
	case "REGISTER":
		if !authorized {
			return []status{{401, "Unauthorized"}}
		}
		return []status{{200, "OK"}}
	case "OPTIONS", "CANCEL", "BYE", "INFO", "MESSAGE", "NOTIFY",
		"SUBSCRIBE", "PUBLISH", "REFER", "UPDATE", "PRACK":
		return []status{{200, "OK"}}
	default:
		return []status{{405, "Method Not Allowed"}}
	}
}

// Replies returns the messages to send back for m, which came from src. Responses, garbage,
// ACKs and requests without the headers a reply must echo get none.
func (r *Responder) Replies(m *Message, src netip.AddrPort) [][]byte {
	return r.replies(m, src, r.authorized(m, src.Addr()))
}

// authorized reports whether m carries credentials that answer a challenge of ours to src.
func (r *Responder) authorized(m *Message, src netip.Addr) bool {
	for _, cred := range [][]byte{m.Authorization, m.ProxyAuthorization} {
		if n := AuthParam(cred, "nonce"); n != nil && (r.NonceOK == nil || r.NonceOK(src, n)) {
			return true
		}
	}
	return false
}

// replies is Replies with authorized already known.
func (r *Responder) replies(m *Message, src netip.AddrPort, authorized bool) [][]byte {
	if m.Kind != Request || m.NVia == 0 || m.From == nil || m.To == nil || m.CallID == nil || m.CSeq == nil {
		return nil
	}
	sts := statuses(m.Method, authorized)
	if len(sts) == 0 {
		return nil
	}
	var tag []byte
	switch {
	case r.tag != nil:
		tag = r.tag()
	case r.TagFor != nil:
		tag = r.TagFor(src.Addr())
	default:
		tag = randomTag()
	}
	out := make([][]byte, 0, len(sts))
	for _, st := range sts {
		out = append(out, r.build(m, src, st, tag))
	}
	return out
}

func (r *Responder) build(m *Message, src netip.AddrPort, st status, tag []byte) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "SIP/2.0 "...)
	b = strconv.AppendInt(b, int64(st.code), 10)
	b = append(b, ' ')
	b = append(b, st.reason...)
	b = append(b, "\r\n"...)
	for i := range m.NVia {
		b = append(b, "Via: "...)
		if i == 0 {
			b = appendTopVia(b, m.Via[0], src)
		} else {
			b = append(b, m.Via[i]...)
		}
		b = append(b, "\r\n"...)
	}
	b = appendHeader(b, "From", m.From)
	b = append(b, "To: "...)
	b = append(b, m.To...)
	if st.code > 100 && !HasTag(m.To) {
		b = append(b, ";tag="...)
		b = append(b, tag...)
	}
	b = append(b, "\r\n"...)
	b = appendHeader(b, "Call-ID", m.CallID)
	b = appendHeader(b, "CSeq", m.CSeq)
	persona := r.Persona
	if persona == "" {
		persona = DefaultPersona
	}
	b = appendHeader(b, "Server", []byte(persona))
	switch {
	case st.code == 401:
		// What Asterisk sends (its default realm is "asterisk"). svcrack and sipsak answer it.
		var nonce []byte
		switch {
		case r.nonce != nil:
			nonce = r.nonce()
		case r.NonceFor != nil:
			nonce = r.NonceFor(src.Addr())
		default:
			nonce = randomNonce()
		}
		b = append(b, `WWW-Authenticate: Digest realm="`...)
		b = appendRealm(b, persona)
		b = append(b, `", nonce="`...)
		b = append(b, nonce...)
		b = append(b, "\", algorithm=MD5, qop=\"auth\"\r\n"...)
	case string(m.Method) == "OPTIONS" || st.code == 405:
		b = appendHeader(b, "Allow", []byte(allowHeader))
		b = appendHeader(b, "Accept", []byte(acceptHeader))
		b = appendHeader(b, "Supported", []byte(supportedHeader))
	case string(m.Method) == "REGISTER":
		if len(m.Contact) > 0 && string(m.Contact) != "*" {
			b = append(b, "Contact: "...)
			b = append(b, m.Contact...)
			b = append(b, ";expires=3600\r\n"...)
		}
		b = appendHeader(b, "Expires", []byte("3600"))
	}
	return append(b, "Content-Length: 0\r\n\r\n"...)
}

func appendHeader(b []byte, name string, val []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, val...)
	return append(b, "\r\n"...)
}

// appendTopVia echoes the first Via with received= and a filled-in rport (RFC 3581), so the
// reply reaches scanners behind NAT and looks like a real server's.
func appendTopVia(b, via []byte, src netip.AddrPort) []byte {
	first, others := via, []byte(nil)
	if c := bytes.IndexByte(via, ','); c >= 0 {
		first, others = bytes.TrimRight(via[:c], " \t"), via[c:]
	}
	for len(first) > 0 {
		semi := bytes.IndexByte(first, ';')
		if semi < 0 {
			b = append(b, first...)
			break
		}
		b = append(b, first[:semi+1]...)
		first = first[semi+1:]
		end := bytes.IndexByte(first, ';')
		if end < 0 {
			end = len(first)
		}
		param := first[:end]
		switch {
		case bytes.EqualFold(bytes.TrimSpace(param), []byte("rport")):
			b = append(b, "rport="...)
			b = strconv.AppendUint(b, uint64(src.Port()), 10)
		case hasPrefixFold(bytes.TrimSpace(param), "received="):
			// Replaced by ours below: drop it, and the separator written before it.
			b = b[:len(b)-1]
		default:
			b = append(b, param...)
		}
		first = first[end:]
	}
	b = append(b, ";received="...)
	b = src.Addr().Unmap().WithZone("").AppendTo(b)
	return append(b, others...)
}

// HasTag reports whether a To/From value already carries a tag parameter outside its URI.
func HasTag(v []byte) bool {
	if gt := bytes.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt:]
	}
	for {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return false
		}
		v = v[semi+1:]
		if hasPrefixFold(bytes.TrimLeft(v, " \t"), "tag=") {
			return true
		}
	}
}

// appendRealm appends the realm of our challenges: the persona's first word in lower case,
// such as "asterisk" (Asterisk's own default realm) for the default persona.
func appendRealm(b []byte, persona string) []byte {
	n := len(b)
	for i := 0; i < len(persona) && persona[i] != ' '; i++ {
		switch c := persona[i]; {
		case 'A' <= c && c <= 'Z':
			b = append(b, c+'a'-'A')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '-', c == '_':
			b = append(b, c)
		}
	}
	if len(b) == n {
		b = append(b, "asterisk"...)
	}
	return b
}

func randomNonce() []byte {
	var raw [16]byte
	for i := range raw {
		raw[i] = byte(rand.Uint32())
	}
	return hex.AppendEncode(nil, raw[:])
}

func randomTag() []byte {
	var raw [5]byte
	for i := range raw {
		raw[i] = byte(rand.Uint32())
	}
	return hex.AppendEncode(nil, raw[:])
}
