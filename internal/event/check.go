package event

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Reasons an event is invalid; peers count refusals under these labels.
const (
	ReasonSchema = "schema"    // a field missing, out of bounds or of the wrong form
	ReasonTime   = "timestamp" // not an event_timestamp, or outside the accepted window
	ReasonIP     = "ip"        // source or destination not a canonical IP address
	ReasonNumber = "number"    // called_number with characters no dial string has
)

// InvalidError says why Check refused an event.
type InvalidError struct {
	Reason string
	Err    error
}

func (e *InvalidError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *InvalidError) Unwrap() error { return e.Err }

func invalid(reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reason of an *InvalidError in err's chain, or "".
func ReasonOf(err error) string {
	var ie *InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return ""
}

// Rules say what Check asks of an event beyond the form every stored event has.
type Rules struct {
	// Now, when set, bounds event_timestamp to [Now-MaxAge, Now+MaxFuture] (defaults 30 days
	// and 5 minutes): what peers accept, so a node can neither backdate nor pre-date reports.
	Now       time.Time
	MaxAge    time.Duration
	MaxFuture time.Duration
	// Shared adds the bounds of an event that travels between nodes: a short printable app
	// name and version, a node id that is a UUID, a SIP token as method, a printable number of
	// at most 1 KiB and a user agent of at most 8 KiB. Capture keeps what it received whole,
	// so a local event may fail these and still be stored; it is then not shared.
	Shared bool
}

// Limits of a shared event.
const (
	maxSharedName   = 64
	maxSharedMethod = 32
	maxSharedAgent  = 8 << 10
	maxSharedNumber = 1 << 10
	// maxStoredText bounds any text field: a 64 KiB message whose invalid bytes each became
	// U+FFFD (three bytes).
	maxStoredText = 3 * MaxMessage
	// maxMessageLength bounds sip_message_length: a stream message is read up to 64 KiB, and
	// an import may carry longer ones from other tools.
	maxMessageLength = 1 << 30
	// maxLabel bounds a tool name and a payload's kind and place; maxPayloads the findings
	// of one event (four kinds in the Request-URI and a few dozen headers at most).
	maxLabel    = 32
	maxPayloads = 64
)

// Check is the one validator of events, whatever their source: captured, imported or received
// from a peer. Errors are *InvalidError.
func Check(e *Event, r Rules) error {
	if e.AppName == "" {
		return invalid(ReasonSchema, "app_name is empty")
	}
	if u, err := uuid.Parse(e.UUID); err != nil || u.String() != e.UUID {
		return invalid(ReasonSchema, "event_uuid %q is not a UUID in canonical form", e.UUID)
	}
	switch e.CollectedMethod {
	case Responsive, Passive:
	default:
		return invalid(ReasonSchema, "collected_method %q is not responsive or passive", e.CollectedMethod)
	}
	switch e.Transport {
	case UDP, TCP, TLS:
	default:
		return invalid(ReasonSchema, "transport_type %q is not UDP, TCP or TLS", e.Transport)
	}
	if e.SourcePort < 0 || e.SourcePort > 65535 || e.DestinationPort < 0 || e.DestinationPort > 65535 {
		return invalid(ReasonSchema, "port out of range")
	}
	if e.SIPMessageLength != 0 && (e.SIPMessageLength <= len(e.SIPMessage)/3 || e.SIPMessageLength > maxMessageLength) {
		return invalid(ReasonSchema, "sip_message_length %d does not fit a message cut from it", e.SIPMessageLength)
	}
	if e.RepeatCount < 0 || e.RepeatCount > MaxRepeatCount {
		return invalid(ReasonSchema, "repeat_count %d is not between 0 and %d", e.RepeatCount, MaxRepeatCount)
	}
	for _, f := range []struct{ name, v string }{
		{"app_name", e.AppName}, {"app_version", e.AppVersion}, {"created_by_node_id", e.NodeID},
		{"sip_method", e.SIPMethod}, {"sip_user_agent", e.SIPUserAgent}, {"sip_message", e.SIPMessage},
		{"called_number", e.CalledNumber},
	} {
		if len(f.v) > maxStoredText || !utf8.ValidString(f.v) {
			return invalid(ReasonSchema, "%s is longer than %d bytes or not UTF-8", f.name, maxStoredText)
		}
	}
	if len(e.Tool) > maxLabel || !label(e.Tool) {
		return invalid(ReasonSchema, "tool %q is not a short lower-case name", e.Tool)
	}
	if len(e.Payload) > maxPayloads {
		return invalid(ReasonSchema, "payload lists %d findings, more than %d", len(e.Payload), maxPayloads)
	}
	for _, p := range e.Payload {
		if p.Kind == "" || len(p.Kind) > maxLabel || !label(p.Kind) || p.Where == "" || len(p.Where) > maxLabel || !label(p.Where) {
			return invalid(ReasonSchema, "payload finding %q in %q is not a short lower-case name", p.Kind, p.Where)
		}
	}
	t, err := ParseTime(e.Timestamp)
	if err != nil {
		return invalid(ReasonTime, "%w", err)
	}
	if !r.Now.IsZero() {
		maxAge, maxFuture := r.MaxAge, r.MaxFuture
		if maxAge <= 0 {
			maxAge = 30 * 24 * time.Hour
		}
		if maxFuture <= 0 {
			maxFuture = 5 * time.Minute
		}
		if t.After(r.Now.Add(maxFuture)) || t.Before(r.Now.Add(-maxAge)) {
			return invalid(ReasonTime, "event_timestamp %s is outside [now-%v, now+%v]", e.Timestamp, maxAge, maxFuture)
		}
	}
	src, err := netip.ParseAddr(e.SourceIP)
	if err != nil || src.Zone() != "" || src.Is4In6() || src.String() != e.SourceIP {
		return invalid(ReasonIP, "source_ip %q is not an IP address as events spell it", e.SourceIP)
	}
	if e.DestinationIP != "" {
		dst, err := netip.ParseAddr(e.DestinationIP)
		if err != nil || dst.Zone() != "" || dst.Is4In6() || dst.String() != e.DestinationIP {
			return invalid(ReasonIP, "destination_ip %q is not an IP address as events spell it", e.DestinationIP)
		}
	}
	if !r.Shared {
		return nil
	}
	if src.IsUnspecified() {
		return invalid(ReasonIP, "source_ip %s names no host", e.SourceIP)
	}
	if len(e.AppName) > maxSharedName || len(e.AppVersion) > maxSharedName || !printable(e.AppName) || !printable(e.AppVersion) {
		return invalid(ReasonSchema, "app_name or app_version longer than %d bytes or not printable", maxSharedName)
	}
	if u, err := uuid.Parse(e.NodeID); err != nil || u.String() != e.NodeID {
		return invalid(ReasonSchema, "created_by_node_id %q is not a UUID", e.NodeID)
	}
	if len(e.SIPMethod) > maxSharedMethod || !sipToken(e.SIPMethod) {
		return invalid(ReasonSchema, "sip_method %q is not a SIP token", e.SIPMethod)
	}
	if len(e.SIPUserAgent) > maxSharedAgent {
		return invalid(ReasonSchema, "sip_user_agent is longer than %d bytes", maxSharedAgent)
	}
	// Empty for a packet that was not SIP; NOT_FOUND for SIP without a number.
	if len(e.CalledNumber) > maxSharedNumber || !printable(e.CalledNumber) {
		return invalid(ReasonNumber, "called_number %q is longer than %d bytes or not printable", e.CalledNumber, maxSharedNumber)
	}
	return nil
}

// printable is valid UTF-8 without control characters: what a dial string, or an injection
// payload captured in one, can hold and still be shown and stored safely.
func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, unicode.IsControl) < 0
}

// label is what names the tools and payload kinds and places: lower-case letters, digits
// and dashes (empty is allowed: no tool known).
func label(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// sipToken is the SIP method grammar (RFC 3261 token), or empty for a non-SIP packet.
func sipToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
