package storespool

import (
	"encoding/json"
	"fmt"

	"github.com/dialtrap/dialtrap/internal/event"
)

// A record is one line of compact JSON (JSON escapes every newline inside strings):
//
//	{"v":1,"e":EVENT}                                                   captured here
//	{"v":1,"e":EVENT,"from_peer":true,"peer":ID,"trusted":B,"sealed":BASE64} from a peer
//
// EVENT is the event's contract JSON (Event.AppendJSON, repeat_count included); the fields
// that JSON leaves out (json:"-": who sent an event from a peer, whether that peer was
// trusted, its signed envelope) follow it, so a replayed event is stored as it came.
const recordVersion = 1

// peerFields are the event's fields that its JSON does not carry.
type peerFields struct {
	FromPeer bool   `json:"from_peer,omitempty"`
	Peer     string `json:"peer,omitempty"`
	Trusted  bool   `json:"trusted,omitempty"`
	Sealed   []byte `json:"sealed,omitempty"`
}

type record struct {
	V int          `json:"v"`
	E *event.Event `json:"e"`
	peerFields
}

// appendRecord appends e's record to dst.
func appendRecord(dst []byte, e *event.Event) ([]byte, error) {
	dst = append(dst, `{"v":1,"e":`...)
	dst, err := e.AppendJSON(dst)
	if err != nil {
		return nil, err
	}
	if e.FromPeer || e.Peer != "" || e.Trusted || len(e.Sealed) > 0 {
		b, err := json.Marshal(peerFields{FromPeer: e.FromPeer, Peer: e.Peer, Trusted: e.Trusted, Sealed: e.Sealed})
		if err != nil {
			return nil, err
		}
		dst = append(dst, ',')
		dst = append(dst, b[1:len(b)-1]...) // the fields, without their braces
	}
	return append(dst, '}'), nil
}

// parseRecord reads a record back into the event it was made from.
func parseRecord(b []byte) (*event.Event, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if r.V != recordVersion || r.E == nil {
		return nil, fmt.Errorf("record version %d without an event, or of a newer dialtrap: this one reads version %d", r.V, recordVersion)
	}
	e := r.E
	e.FromPeer, e.Peer, e.Trusted, e.Sealed = r.FromPeer, r.Peer, r.Trusted, r.Sealed
	return e, nil
}
