// Package event defines the Event, one bad-actor sighting, and its wire form: the compact JSON
// object with the 13 contract keys in fixed order that the JSON log, the webhook and peers share.
package event

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// AppName is the value of the app_name key.
const AppName = "dialtrap"

// TimeLayout is the event_timestamp layout: UTC with exactly nine fraction digits.
const TimeLayout = "2006-01-02 15:04:05.000000000"

// NotFound stands in for a called number or user agent that a SIP message lacks.
const NotFound = "NOT_FOUND"

// Collection methods.
const (
	Responsive = "responsive"
	Passive    = "passive"
)

// Transports.
const (
	UDP = "UDP"
	TCP = "TCP"
	TLS = "TLS"
)

// MaxMessage is the largest SIP message read whole (a datagram, a stream message): the parser
// sees all of it.
const MaxMessage = 64 << 10

// MaxStoredMessage is how much of a message an event keeps, in bytes of valid UTF-8: enough for
// any real SIP request, and a bound on what a flood of 64 KiB junk costs in memory and disk.
// A longer message is cut and SIPMessageLength says how long it was.
const MaxStoredMessage = 16 << 10

// Event is one bad-actor sighting. The field order is the JSON key order of the contract: the
// 13 string keys first, then the ports, then optional extras that are omitted when empty.
type Event struct {
	AppName         string `json:"app_name"`
	AppVersion      string `json:"app_version"`
	Timestamp       string `json:"event_timestamp"`
	UUID            string `json:"event_uuid"`
	NodeID          string `json:"created_by_node_id"`
	CollectedMethod string `json:"collected_method"`
	Transport       string `json:"transport_type"`
	SourceIP        string `json:"source_ip"`
	DestinationIP   string `json:"destination_ip"`
	CalledNumber    string `json:"called_number"`
	SIPMethod       string `json:"sip_method"`
	SIPUserAgent    string `json:"sip_user_agent"`
	SIPMessage      string `json:"sip_message"`
	SourcePort      int    `json:"source_port"`
	DestinationPort int    `json:"destination_port"`
	// SourceVerified is true when the source address is known not to be forged: the message
	// came over TCP or TLS after a completed handshake, or a UDP source echoed a value that
	// only our reply to that address carried (responsive mode). Peers keep the originator's.
	SourceVerified bool `json:"source_verified"`
	// SIPMessageLength is the length in bytes of the message received, when sip_message holds
	// only its first MaxStoredMessage bytes; 0 (and absent from the JSON) when it is whole.
	SIPMessageLength int `json:"sip_message_length,omitempty"`
	// Tool names the scanner that sent the message, read from the message's shape
	// (internal/fingerprint): "sipvicious", "sipp", "sipsak"...; empty when none is known.
	Tool string `json:"tool,omitempty"`
	// UASpoofed is true when the User-Agent names another tool than the shape does.
	UASpoofed bool `json:"ua_spoofed,omitempty"`
	// Payload lists the attack payloads found in the Request-URI and headers
	// (internal/payload): SQL injection, shell, format strings, script.
	Payload []Payload `json:"payload,omitempty"`
	// RepeatCount is how many probes the event stands for when identical ones were folded
	// into it (internal/fold): every count adds Weight. 0 (absent from the JSON) and 1 both
	// mean one probe.
	RepeatCount int64 `json:"repeat_count,omitempty"`

	// FromPeer is true for events learned from another node; it is stored, never serialised.
	FromPeer bool `json:"-"`
	// For events from peers: the peer ID that signed it, whether that peer was trusted
	// (--p2p-trust) when it arrived, and the signed envelope itself, kept so that this node can
	// serve the event to peers catching up without being able to alter it.
	Peer    string `json:"-"`
	Trusted bool   `json:"-"`
	Sealed  []byte `json:"-"`
}

// Payload is one attack payload found in a message: its kind ("sqli", "shell", "format",
// "script") and where it was ("request-uri", or a header's name in lower case).
type Payload struct {
	Kind  string `json:"kind"`
	Where string `json:"where"`
}

// Origin describes where and how a probe arrived; New turns it into an Event.
type Origin struct {
	AppVersion string
	NodeID     string
	Method     string // Responsive or Passive
	Transport  string // UDP, TCP or TLS
	Source     netip.AddrPort
	Dest       netip.AddrPort
	Verified   bool // the source address is proven, see Event.SourceVerified
}

// New stamps a sighting with the current UTC time and a fresh UUID. The UUID is version 7
// (RFC 9562): 74 random bits after a millisecond timestamp, so events stored in arrival order
// append to the store's UUID index instead of touching random pages of it, which made
// batched writes twice as fast.
func New(o Origin, now time.Time, number, method, agent string, msg []byte) *Event {
	stored, length := StoredMessage(msg)
	return &Event{
		AppName:          AppName,
		AppVersion:       o.AppVersion,
		Timestamp:        FormatTime(now),
		UUID:             newUUID(),
		NodeID:           o.NodeID,
		CollectedMethod:  o.Method,
		Transport:        o.Transport,
		SourceIP:         addrString(o.Source.Addr()),
		DestinationIP:    addrString(o.Dest.Addr()),
		CalledNumber:     sanitizeString(number),
		SIPMethod:        sanitizeString(method),
		SIPUserAgent:     sanitizeString(agent),
		SIPMessage:       stored,
		SIPMessageLength: length,
		SourcePort:       int(o.Source.Port()),
		DestinationPort:  int(o.Dest.Port()),
		SourceVerified:   o.Verified,
	}
}

// StoredMessage returns what an event keeps of msg: valid UTF-8 (invalid bytes become U+FFFD)
// of at most MaxStoredMessage bytes, and the length of msg when that is not all of it (0 when
// it is).
func StoredMessage(msg []byte) (stored string, length int) {
	cut := len(msg) > MaxStoredMessage
	s := sanitizeString(string(msg[:min(len(msg), MaxStoredMessage)]))
	if len(s) > MaxStoredMessage { // U+FFFD takes three bytes where the invalid byte took one
		n := MaxStoredMessage
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], true
	}
	if cut {
		return s, len(msg)
	}
	return s, 0
}

// Folded returns a copy of e standing for n probes alike, the last of them at last: a new
// event (a fresh UUID) with e's content, for the probes folded after e (internal/fold).
func (e *Event) Folded(last time.Time, n int64) *Event {
	c := *e
	c.UUID, c.Timestamp, c.RepeatCount = newUUID(), FormatTime(last), 0
	if n > 1 {
		c.RepeatCount = min(n, MaxRepeatCount)
	}
	return &c
}

func newUUID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString() // only if the clock or entropy source fails
	}
	return u.String()
}

// addrString prints an IPv4-mapped IPv6 address (what a dual-stack socket reports for IPv4
// peers) as plain IPv4, and drops any zone, so one host always has one spelling.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// ParseIP reads an IPv4 or IPv6 address given without a zone and returns it spelled as
// events spell source IPs (see addrString), so lookups find what capture stored.
func ParseIP(s string) (string, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return addrString(a), true
}

// FormatTime renders t in the event_timestamp layout.
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeLayout)
}

// ParseTime reads an event_timestamp.
func ParseTime(s string) (time.Time, error) {
	if t, ok := parseStamp(s); ok {
		return t, nil
	}
	t, err := time.ParseInLocation(TimeLayout, s, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("event timestamp %q is not in the form %q: %w", s, TimeLayout, err)
	}
	return t, nil
}

// parseStamp reads a well-formed event_timestamp digit by digit, four times faster than
// time.Parse: feeds compute a timeout for each of 100,000 keys. Anything else is left to
// time.Parse, which also says what is wrong.
func parseStamp(s string) (time.Time, bool) {
	if len(s) != len(TimeLayout) || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' || s[19] != '.' {
		return time.Time{}, false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for i := from; i < to; i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	var v [7]int
	for i, r := range [7][2]int{{0, 4}, {5, 7}, {8, 10}, {11, 13}, {14, 16}, {17, 19}, {20, 29}} {
		var ok bool
		if v[i], ok = num(r[0], r[1]); !ok {
			return time.Time{}, false
		}
	}
	if v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 59 {
		return time.Time{}, false
	}
	t := time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], v[6], time.UTC)
	if t.Day() != v[2] { // 31 February
		return time.Time{}, false
	}
	return t, true
}

// Sanitize returns msg as valid UTF-8 (invalid bytes become U+FFFD), cut at MaxMessage bytes.
func Sanitize(msg []byte) string {
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
	}
	return sanitizeString(string(msg))
}

// sanitizeString makes a field taken from a packet valid UTF-8, so the store, the JSON log and
// peers all hold the same text.
func sanitizeString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Weight is how many probes the event stands for: its RepeatCount, at least 1.
//
// An event from a peer not trusted (--p2p-trust) when it arrived weighs 1 whatever its
// repeat_count: the claim of many probes is only that peer's word, and thresholds (feeds'
// min_count, the policy agent, BGP) must not be pushed past by one event from anyone.
func (e *Event) Weight() int64 {
	if e.FromPeer && !e.Trusted {
		return 1
	}
	return max(1, e.RepeatCount)
}

// MaxRepeatCount bounds RepeatCount: a peer's claim beyond it is refused (Check). A fold
// window holds at most a minute; no single source keeps up more than this in one.
const MaxRepeatCount = 10_000_000

// sizeOverhead is what an event costs beyond its text: the struct, string headers, the
// allocator's rounding.
const sizeOverhead = 512

// Size estimates the memory the event holds, for queues bounded in bytes: a 64 KiB junk
// datagram costs far more than a scanner's OPTIONS, and a count alone would not see it.
func (e *Event) Size() int {
	return sizeOverhead + len(e.AppName) + len(e.AppVersion) + len(e.Timestamp) + len(e.UUID) +
		len(e.NodeID) + len(e.CollectedMethod) + len(e.Transport) + len(e.SourceIP) +
		len(e.DestinationIP) + len(e.CalledNumber) + len(e.SIPMethod) + len(e.SIPUserAgent) +
		len(e.SIPMessage) + len(e.Peer) + len(e.Sealed) + len(e.Tool) + 64*len(e.Payload)
}

// AppendJSON appends the compact JSON object (no trailing newline) to dst. It writes what
// encoding/json writes for the struct (without HTML escaping: the contract shows SIP text as
// is, <sip:...> and all), three times faster: the JSON log, the webhook and peers encode
// every event (TestAppendJSONMatchesEncodingJSON, FuzzAppendJSON).
func (e *Event) AppendJSON(dst []byte) ([]byte, error) {
	return e.appendJSON(dst, CompatNone), nil
}

// Compat is a spelling of the JSON object for consumers of other products' logs
// (--event-compat). Only the operator's own outputs, the JSON log and the webhook, write it:
// the store, the API, peers and export keep the contract's bare addresses.
type Compat uint8

const (
	// CompatNone is the contract: bare addresses in source_ip and destination_ip, the ports
	// in source_port and destination_port.
	CompatNone Compat = iota
	// CompatIPPort writes source_ip and destination_ip as address:port ([v6]:port), as the
	// reference product's later versions do and T-Pot's log pipelines read; the port keys
	// stay. An address without a port (0: an imported record of the reference's database,
	// a lost destination) is written bare.
	CompatIPPort
)

// CompatNames are the --event-compat values, in the order of the Compat constants; "" is
// CompatNone too.
var CompatNames = []string{"none", "ip-port"}

// ParseCompat reads an --event-compat value.
func ParseCompat(s string) (Compat, error) {
	switch s {
	case "", "none":
		return CompatNone, nil
	case "ip-port":
		return CompatIPPort, nil
	}
	return CompatNone, fmt.Errorf("%q: use none (bare addresses, the default) or ip-port (address:port in source_ip and destination_ip)", s)
}

// String is the --event-compat value of c.
func (c Compat) String() string {
	if int(c) < len(CompatNames) {
		return CompatNames[c]
	}
	return "compat(" + strconv.Itoa(int(c)) + ")"
}

// AppendJSONCompat is AppendJSON in the spelling c. The keys, their order and every other
// value are AppendJSON's.
func (e *Event) AppendJSONCompat(dst []byte, c Compat) ([]byte, error) {
	return e.appendJSON(dst, c), nil
}

func (e *Event) appendJSON(dst []byte, c Compat) []byte {
	for _, f := range [...]struct {
		key string
		v   string
	}{
		{`{"app_name":`, e.AppName}, {`,"app_version":`, e.AppVersion}, {`,"event_timestamp":`, e.Timestamp},
		{`,"event_uuid":`, e.UUID}, {`,"created_by_node_id":`, e.NodeID}, {`,"collected_method":`, e.CollectedMethod},
		{`,"transport_type":`, e.Transport},
	} {
		dst = append(dst, f.key...)
		dst = appendString(dst, f.v)
	}
	if c == CompatIPPort {
		dst = append(dst, `,"source_ip":`...)
		dst = appendHostPort(dst, e.SourceIP, e.SourcePort)
		dst = append(dst, `,"destination_ip":`...)
		dst = appendHostPort(dst, e.DestinationIP, e.DestinationPort)
	} else {
		dst = append(dst, `,"source_ip":`...)
		dst = appendString(dst, e.SourceIP)
		dst = append(dst, `,"destination_ip":`...)
		dst = appendString(dst, e.DestinationIP)
	}
	for _, f := range [...]struct {
		key string
		v   string
	}{
		{`,"called_number":`, e.CalledNumber}, {`,"sip_method":`, e.SIPMethod}, {`,"sip_user_agent":`, e.SIPUserAgent},
		{`,"sip_message":`, e.SIPMessage},
	} {
		dst = append(dst, f.key...)
		dst = appendString(dst, f.v)
	}
	dst = append(dst, `,"source_port":`...)
	dst = strconv.AppendInt(dst, int64(e.SourcePort), 10)
	dst = append(dst, `,"destination_port":`...)
	dst = strconv.AppendInt(dst, int64(e.DestinationPort), 10)
	dst = append(dst, `,"source_verified":`...)
	dst = strconv.AppendBool(dst, e.SourceVerified)
	if e.SIPMessageLength != 0 {
		dst = append(dst, `,"sip_message_length":`...)
		dst = strconv.AppendInt(dst, int64(e.SIPMessageLength), 10)
	}
	if e.Tool != "" {
		dst = append(dst, `,"tool":`...)
		dst = appendString(dst, e.Tool)
	}
	if e.UASpoofed {
		dst = append(dst, `,"ua_spoofed":true`...)
	}
	if len(e.Payload) > 0 {
		dst = append(dst, `,"payload":[`...)
		for i, p := range e.Payload {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"kind":`...)
			dst = appendString(dst, p.Kind)
			dst = append(dst, `,"where":`...)
			dst = appendString(dst, p.Where)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if e.RepeatCount != 0 {
		dst = append(dst, `,"repeat_count":`...)
		dst = strconv.AppendInt(dst, e.RepeatCount, 10)
	}
	return append(dst, '}')
}

// appendHostPort appends host and port as one JSON string the way net.JoinHostPort joins
// them (an IPv6 address in brackets), straight into dst; a missing host or port (0 or less)
// leaves the host alone.
func appendHostPort(dst []byte, host string, port int) []byte {
	if host == "" || port <= 0 {
		return appendString(dst, host)
	}
	open := len(dst) // the opening quote
	dst = appendString(dst, host)
	dst = dst[:len(dst)-1] // the closing quote, written again after the port
	if strings.IndexByte(host, ':') >= 0 {
		// A bracket after the opening quote: the escaped address moves up one byte.
		dst = append(dst, 0)
		copy(dst[open+2:], dst[open+1:])
		dst[open+1] = '['
		dst = append(dst, ']')
	}
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, int64(port), 10)
	return append(dst, '"')
}

// appendString appends s as a JSON string, escaped as encoding/json escapes it when HTML
// escaping is off: quote, backslash and control characters; U+2028 and U+2029 (JavaScript
// line terminators); invalid UTF-8 as U+FFFD.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// MarshalLine returns the compact JSON object followed by a newline: one JSON log line.
func (e *Event) MarshalLine() ([]byte, error) {
	b, err := e.AppendJSON(make([]byte, 0, 512+len(e.SIPMessage)))
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// sinceLayouts are the absolute forms ParseSince takes (UTC unless they carry a zone).
var sinceLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"}

// ParseSince reads the start of a time window as operators write it, an absolute time
// (2026-11-23, 2026-11-23 10:00, RFC 3339) or a duration back from now (24h, 90m), and returns
// it as an event_timestamp.
func ParseSince(s string, now time.Time) (string, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return FormatTime(now.Add(-d)), nil
	}
	for _, l := range sinceLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return FormatTime(t), nil
		}
	}
	return "", fmt.Errorf("since %q is neither a time (2026-11-23, 2026-11-23 10:00, RFC 3339) nor a duration (24h)", s)
}

// Tools are the names internal/fingerprint gives a tool. A Tool outside them (a newer
// peer's) is stored as sent and counted as unknown.
var Tools = []string{"sipvicious", "sipp", "sipsak", "sipcli", "pplsip"}

// PayloadKinds and PayloadPlaces are the kinds and places internal/payload reports. Others
// (a newer peer's) are stored as sent and counted as "other".
var (
	PayloadKinds  = []string{"sqli", "shell", "format", "script"}
	PayloadPlaces = []string{"request-uri", "from", "to", "contact", "user-agent", "call-id", "via", "cseq", "subject",
		"authorization", "proxy-authorization", "refer-to", "referred-by", "p-asserted-identity", "remote-party-id",
		"diversion", "other"}
)

// KnownTool returns t when it is one of Tools, else "".
func KnownTool(t string) string {
	if slices.Contains(Tools, t) {
		return t
	}
	return ""
}

// CountedPayloads returns the distinct findings of p as statistics count them, "kind@where",
// with kinds and places outside the known ones as "other": what a peer sends cannot add
// values to the counts, nor count one finding twice.
func CountedPayloads(p []Payload) []string {
	var out []string
	for _, f := range p {
		kind, where := f.Kind, f.Where
		if !slices.Contains(PayloadKinds, kind) {
			kind = "other"
		}
		if !slices.Contains(PayloadPlaces, where) {
			where = "other"
		}
		if v := kind + "@" + where; !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
