// Package fingerprint names the tool that sent a SIP request from the request's shape — the
// formats of its branch, tag and Call-ID, its header order, the headers only one tool adds —
// rather than from its User-Agent, which a scanner can set to anything. A User-Agent that
// names another tool than the shape does is reported as spoofed (a sipvicious scan that calls
// itself "Cisco-SIPGateway"). Identify allocates nothing: it runs on the capture path.
package fingerprint

import (
	"bytes"

	"github.com/dialtrap/dialtrap/internal/sip"
)

// Tools Identify knows. Unknown is a request whose shape matches none and whose User-Agent
// names none.
const (
	Unknown    = ""
	SIPVicious = "sipvicious" // svmap, svwar, svcrack ("friendly-scanner")
	SIPp       = "sipp"
	SIPSak     = "sipsak"
	SIPCli     = "sipcli"
	PPLSip     = "pplsip"
)

// Result is what Identify found.
type Result struct {
	Tool string
	// ByShape is true when the shape named the tool; false when only the User-Agent did.
	ByShape bool
	// UASpoofed is true when the shape names a tool and the User-Agent is present and names
	// another one, or none of the tool's own.
	UASpoofed bool
}

// score is how much of a tool's shape a request has.
type score struct {
	tool   string
	points int
}

// minPoints is how many independent marks name a tool by shape: one can be a coincidence
// (a PBX may use digit-only Call-IDs), three of one tool's are not.
const minPoints = 3

// Identify names the tool behind m (parsed from raw by sip.Parse).
func Identify(m *sip.Message, raw []byte) Result {
	var branch []byte
	if m.NVia > 0 {
		branch = viaParam(m.Via[0], "branch")
	}
	tag := headerParam(m.From, "tag")
	order := headerOrder(raw)

	best := score{}
	consider := func(s score) {
		if s.points > best.points {
			best = s
		}
	}

	// sipvicious: branch z9hG4bK-<digits>, a long hex From tag (its text, hex-encoded, with a
	// 0x01 separator), a Call-ID of digits, the headers in its fixed order, Accept: application/sdp.
	v := score{tool: SIPVicious}
	if rest, ok := bytes.CutPrefix(branch, []byte("z9hG4bK-")); ok && allDigits(rest) {
		v.points++
	}
	if len(tag) >= 32 && allHex(tag) && bytes.Contains(tag, []byte("01")) {
		v.points++
	}
	if allDigits(m.CallID) {
		v.points++
	}
	if order.startsWith("via", "max-forwards", "to", "from") {
		v.points++
	}
	consider(v)

	// SIPp: branch z9hG4bK-<pid>-<call>-<n>, Call-ID <call>-<pid>@<ip>, tags <pid>SIPpTag<n>
	// in its stock scenarios, Subject: Performance Test.
	p := score{tool: SIPp}
	if rest, ok := bytes.CutPrefix(branch, []byte("z9hG4bK-")); ok && dashedDigits(rest, 3) {
		p.points++
	}
	if at := bytes.IndexByte(m.CallID, '@'); at > 0 && dashedDigits(m.CallID[:at], 2) {
		p.points++
	}
	if bytes.Contains(tag, []byte("SIPpTag")) {
		p.points += 2
	}
	if order.has("subject") && bytes.Contains(raw, []byte("\nSubject: Performance Test")) {
		p.points++
	}
	consider(p)

	// sipsak: branch z9hG4bK.<8 hex>, ";alias" on its Via, a From tag of 8 hex digits,
	// Content-Length before Max-Forwards, From sip:sipsak@ when it has no user to be.
	k := score{tool: SIPSak}
	if rest, ok := bytes.CutPrefix(branch, []byte("z9hG4bK.")); ok && len(rest) == 8 && allHex(rest) {
		k.points++
	}
	if m.NVia > 0 && bytes.Contains(m.Via[0], []byte(";alias")) {
		k.points++
	}
	if len(tag) == 8 && allHex(tag) {
		k.points++
	}
	if order.before("content-length", "max-forwards") {
		k.points++
	}
	if bytes.Contains(m.From, []byte("sip:sipsak@")) {
		k.points++
	}
	consider(k)

	claimed := claimedTool(m.UserAgent)
	if best.points < minPoints {
		return Result{Tool: claimed}
	}
	r := Result{Tool: best.tool, ByShape: true}
	r.UASpoofed = len(bytes.TrimSpace(m.UserAgent)) > 0 && claimed != best.tool
	return r
}

// maxAgent is how much of a User-Agent is read for a tool's name: the tools put it first,
// and a 64 KiB User-Agent must not cost six scans of 64 KiB on the capture path.
const maxAgent = 256

// claimedTool is the tool a User-Agent names, if any.
func claimedTool(ua []byte) string {
	ua = ua[:min(len(ua), maxAgent)]
	switch {
	case containsFold(ua, "friendly-scanner"), containsFold(ua, "sipvicious"):
		return SIPVicious
	case containsFold(ua, "sipsak"):
		return SIPSak
	case containsFold(ua, "sipcli"):
		return SIPCli
	case containsFold(ua, "pplsip"):
		return PPLSip
	case containsFold(ua, "sipp"):
		return SIPp
	}
	return Unknown
}

// order holds the first header names of a message, lower-cased, compact forms expanded.
type order struct {
	names [12][16]byte
	lens  [12]uint8
	n     int
}

var compact = map[byte]string{'v': "via", 'f': "from", 't': "to", 'i': "call-id", 'm': "contact", 'l': "content-length", 'k': "supported", 'c': "content-type", 's': "subject"}

// headerOrder reads the names of the first headers of raw.
func headerOrder(raw []byte) order {
	var o order
	line := bytes.IndexByte(raw, '\n')
	for line >= 0 && o.n < len(o.names) {
		raw = raw[line+1:]
		end := bytes.IndexByte(raw, '\n')
		l := raw
		if end >= 0 {
			l = raw[:end]
		}
		l = bytes.TrimRight(l, "\r")
		if len(l) == 0 {
			break
		}
		if l[0] != ' ' && l[0] != '\t' { // not a continuation
			if colon := bytes.IndexByte(l, ':'); colon > 0 {
				name := bytes.TrimSpace(l[:colon])
				if len(name) == 1 {
					if full, ok := compact[name[0]|0x20]; ok {
						name = []byte(full) // a constant's bytes: no allocation escapes
					}
				}
				if len(name) <= len(o.names[0]) {
					for i, c := range name {
						if 'A' <= c && c <= 'Z' {
							c += 'a' - 'A'
						}
						o.names[o.n][i] = c
					}
					o.lens[o.n] = uint8(len(name))
					o.n++
				}
			}
		}
		line = end
	}
	return o
}

func (o *order) name(i int) []byte { return o.names[i][:o.lens[i]] }

func (o *order) index(n string) int {
	for i := range o.n {
		if string(o.name(i)) == n {
			return i
		}
	}
	return -1
}

func (o *order) has(n string) bool { return o.index(n) >= 0 }

func (o *order) before(a, b string) bool {
	i, j := o.index(a), o.index(b)
	return i >= 0 && j >= 0 && i < j
}

func (o *order) startsWith(names ...string) bool {
	if o.n < len(names) {
		return false
	}
	for i, n := range names {
		if string(o.name(i)) != n {
			return false
		}
	}
	return true
}

// viaParam returns a parameter of the first via-parm in v.
func viaParam(v []byte, name string) []byte {
	if c := bytes.IndexByte(v, ','); c >= 0 {
		v = v[:c]
	}
	return param(v, name)
}

// headerParam returns a header parameter (after the URI's closing '>', if any).
func headerParam(v []byte, name string) []byte {
	if gt := bytes.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt:]
	}
	return param(v, name)
}

func param(v []byte, name string) []byte {
	for {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return nil
		}
		v = v[semi+1:]
		kv := v
		if end := bytes.IndexByte(kv, ';'); end >= 0 {
			kv = kv[:end]
		}
		k, val, ok := bytes.Cut(bytes.TrimSpace(kv), []byte("="))
		if ok && len(k) == len(name) && containsFold(k, name) {
			return bytes.TrimSpace(val)
		}
	}
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func allHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return len(b) > 0
}

// dashedDigits reports whether b is n runs of digits joined by '-'.
func dashedDigits(b []byte, n int) bool {
	runs := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, '-')
		part := b
		if i >= 0 {
			part, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !allDigits(part) {
			return false
		}
		runs++
	}
	return runs == n
}

// containsFold reports whether s contains sub, ASCII case-insensitively.
func containsFold(s []byte, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for ; j < len(sub); j++ {
			a, b := s[i+j], sub[j]
			if a|0x20 != b|0x20 || (a|0x20 < 'a' || a|0x20 > 'z') && a != b {
				break
			}
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}
