package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/crypto"
	libpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/dialtrap/dialtrap/internal/event"
)

// An event travels as a libp2p signed envelope (core/record): the event's JSON object signed
// by the originating node's key, in a domain of its own so no other kind of libp2p record can
// pass for an event. The signer's peer ID comes out of the envelope's public key, so whoever
// relays or serves the event cannot change who it is from or what it says.
const (
	envelopeDomain = "dialtrap-event"
	// MaxEnvelope caps a message: a whole 64 KiB SIP message escaped in JSON fits.
	MaxEnvelope = 256 << 10
)

var envelopeCodec = []byte("/dialtrap/event/1")

type eventRecord struct{ json []byte }

func (*eventRecord) Domain() string                   { return envelopeDomain }
func (*eventRecord) Codec() []byte                    { return envelopeCodec }
func (r *eventRecord) MarshalRecord() ([]byte, error) { return r.json, nil }
func (r *eventRecord) UnmarshalRecord(b []byte) error {
	r.json = b
	return nil
}

// Seal signs e with key and returns the bytes to publish.
func Seal(e *event.Event, key crypto.PrivKey) ([]byte, error) {
	b, err := e.AppendJSON(nil)
	if err != nil {
		return nil, err
	}
	env, err := record.Seal(&eventRecord{json: b}, key)
	if err != nil {
		return nil, fmt.Errorf("sign event %s: %w", e.UUID, err)
	}
	return env.Marshal()
}

// Reasons a received message is rejected; they are the labels of the rejection counters.
const (
	ReasonSize      = "size"      // over MaxEnvelope
	ReasonSignature = "signature" // not an envelope of ours, or the signature does not verify
	ReasonSchema    = "schema"    // not an event, or a field out of bounds
	ReasonTime      = "timestamp" // from the future, or older than the accepted window
	ReasonIP        = "ip"        // source or destination not an IP address
	ReasonNumber    = "number"    // called_number with characters no dial string has
	ReasonRate      = "rate"      // valid, but over the originator's rate (ignored, not penalised)
	ReasonOwn       = "own"       // this node's own event coming back
	ReasonDuplicate = "duplicate" // an event_uuid already received, same content
	ReasonConflict  = "conflict"  // an event_uuid already received with other content or signer
)

// RejectError says why a message was refused.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason, format string, args ...any) error {
	return &RejectError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Limits bound what Open accepts.
type Limits struct {
	MaxAge    time.Duration // oldest event_timestamp accepted; default 30 days
	MaxFuture time.Duration // clock skew allowed ahead of now; default 5 minutes
}

// Open verifies a sealed event and checks every field; it returns the event, marked FromPeer,
// and the peer ID that signed it. Errors are *RejectError.
func Open(data []byte, now time.Time, lim Limits) (*event.Event, libpeer.ID, error) {
	if len(data) > MaxEnvelope {
		return nil, "", reject(ReasonSize, "%d bytes, more than %d", len(data), MaxEnvelope)
	}
	var rec eventRecord
	env, err := record.ConsumeTypedEnvelope(data, &rec)
	if err != nil {
		return nil, "", reject(ReasonSignature, "%w", err)
	}
	if string(env.PayloadType) != string(envelopeCodec) {
		return nil, "", reject(ReasonSignature, "payload type %q", env.PayloadType)
	}
	signer, err := libpeer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, "", reject(ReasonSignature, "signer key: %w", err)
	}
	var e event.Event
	if err := json.Unmarshal(rec.json, &e); err != nil {
		return nil, "", reject(ReasonSchema, "not an event: %w", err)
	}
	if err := check(&e, now, lim); err != nil {
		return nil, "", err
	}
	e.FromPeer = true
	return &e, signer, nil
}

func (l Limits) withDefaults() Limits {
	if l.MaxAge <= 0 {
		l.MaxAge = 30 * 24 * time.Hour
	}
	if l.MaxFuture <= 0 {
		l.MaxFuture = 5 * time.Minute
	}
	return l
}

func check(e *event.Event, now time.Time, lim Limits) error {
	lim = lim.withDefaults()
	if e.AppName == "" || len(e.AppName) > 64 || len(e.AppVersion) > 64 || !printable(e.AppName) || !printable(e.AppVersion) {
		return reject(ReasonSchema, "app_name/app_version missing, too long or not printable")
	}
	if _, err := uuid.Parse(e.UUID); err != nil || len(e.UUID) != 36 {
		return reject(ReasonSchema, "event_uuid %q is not a UUID", e.UUID)
	}
	if _, err := uuid.Parse(e.NodeID); err != nil || len(e.NodeID) != 36 {
		return reject(ReasonSchema, "created_by_node_id %q is not a UUID", e.NodeID)
	}
	switch e.CollectedMethod {
	case event.Responsive, event.Passive:
	default:
		return reject(ReasonSchema, "collected_method %q", e.CollectedMethod)
	}
	switch e.Transport {
	case event.UDP, event.TCP, event.TLS:
	default:
		return reject(ReasonSchema, "transport_type %q", e.Transport)
	}
	if len(e.SIPMethod) > 32 || !token(e.SIPMethod) {
		return reject(ReasonSchema, "sip_method %q is not a SIP token", e.SIPMethod)
	}
	if len(e.SIPUserAgent) > 8192 || len(e.SIPMessage) > 3*event.MaxMessage ||
		!utf8.ValidString(e.SIPUserAgent) || !utf8.ValidString(e.SIPMessage) {
		return reject(ReasonSchema, "sip_user_agent or sip_message too long or not UTF-8")
	}
	if e.SourcePort < 0 || e.SourcePort > 65535 || e.DestinationPort < 0 || e.DestinationPort > 65535 {
		return reject(ReasonSchema, "port out of range")
	}
	t, err := event.ParseTime(e.Timestamp)
	if err != nil {
		return reject(ReasonTime, "%w", err)
	}
	if t.After(now.Add(lim.MaxFuture)) || t.Before(now.Add(-lim.MaxAge)) {
		return reject(ReasonTime, "event_timestamp %s is outside [now-%v, now+%v]", e.Timestamp, lim.MaxAge, lim.MaxFuture)
	}
	src, err := netip.ParseAddr(e.SourceIP)
	if err != nil || src.Zone() != "" || src.IsUnspecified() || src.String() != e.SourceIP {
		return reject(ReasonIP, "source_ip %q", e.SourceIP)
	}
	if e.DestinationIP != "" {
		dst, err := netip.ParseAddr(e.DestinationIP)
		if err != nil || dst.Zone() != "" || dst.String() != e.DestinationIP {
			return reject(ReasonIP, "destination_ip %q", e.DestinationIP)
		}
	}
	// Empty for a packet that was not SIP; NOT_FOUND for SIP without a number.
	if len(e.CalledNumber) > 1024 || !printable(e.CalledNumber) {
		return reject(ReasonNumber, "called_number %q", e.CalledNumber)
	}
	return nil
}

// printable is valid UTF-8 without control characters: what a dial string, or an injection
// payload captured in one, can hold and still be shown and stored safely.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, unicode.IsControl) < 0
}

// token is the SIP method grammar (RFC 3261 token), or empty for a non-SIP packet.
func token(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// ReasonOf returns the rejection reason of err, or "" when err is not a rejection.
func ReasonOf(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}
