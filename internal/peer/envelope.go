package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
	ReasonSize      = "size"             // over MaxEnvelope
	ReasonSignature = "signature"        // not an envelope of ours, or the signature does not verify
	ReasonSchema    = event.ReasonSchema // not an event, or a field out of bounds
	ReasonTime      = event.ReasonTime   // from the future, or older than the accepted window
	ReasonIP        = event.ReasonIP     // source or destination not an IP address
	ReasonNumber    = event.ReasonNumber // called_number with characters no dial string has
	ReasonRate      = "rate"             // valid, but over the originator's rate (ignored, not penalised)
	ReasonOwn       = "own"              // this node's own event coming back
	ReasonDuplicate = "duplicate"        // an event_uuid already received, same content
	ReasonConflict  = "conflict"         // an event_uuid already received with other content or signer
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

// check applies the one event validator with the rules of shared events and maps its
// refusal onto a rejection reason.
func check(e *event.Event, now time.Time, lim Limits) error {
	lim = lim.withDefaults()
	err := event.Check(e, event.Rules{Now: now, MaxAge: lim.MaxAge, MaxFuture: lim.MaxFuture, Shared: true})
	if err != nil {
		return &RejectError{Reason: event.ReasonOf(err), Err: err}
	}
	return nil
}

// ReasonOf returns the rejection reason of err, or "" when err is not a rejection.
func ReasonOf(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}
