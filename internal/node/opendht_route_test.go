package node

import (
	"testing"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/opendht"
)

// The p2p sink publishes this node's shareable events; a peer's event never, an OpenDHT
// event only with --opendht-relay.
func TestRelayableToLibp2p(t *testing.T) {
	share := func(*event.Event) bool { return true }
	own := &event.Event{}
	libp2pPeer := &event.Event{FromPeer: true, Peer: "12D3KooWPeer"}
	fromDHT := &event.Event{FromPeer: true, Peer: opendht.Provenance}
	for _, tt := range []struct {
		relay bool
		e     *event.Event
		want  bool
	}{
		{false, own, true}, {false, libp2pPeer, false}, {false, fromDHT, false},
		{true, own, true}, {true, libp2pPeer, false}, {true, fromDHT, true},
	} {
		cfg := &config.Config{OpenDHTRelay: tt.relay}
		if got := relayable(cfg, share)(tt.e); got != tt.want {
			t.Errorf("relay %v, event from %q: %v, want %v", tt.relay, tt.e.Peer, got, tt.want)
		}
		if Routes(cfg)["p2p"] != tt.relay {
			t.Errorf("relay %v: the p2p route lets peer events in: %v", tt.relay, Routes(cfg)["p2p"])
		}
	}
}
