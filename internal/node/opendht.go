package node

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/opendht"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/trust"
)

// CheckOpenDHT checks the OpenDHT options that need no socket: the build must have the
// bridge, and its UDP port must not be libp2p's.
func CheckOpenDHT(cfg *config.Config) error {
	if !cfg.OpenDHT {
		return nil
	}
	if !opendht.Built {
		return ConfigError{fmt.Errorf("--opendht: %w", opendht.ErrNotBuilt)}
	}
	port := openDHTPort(cfg)
	if cfg.P2P && port != 0 {
		for _, a := range cfg.P2PAddr {
			if strings.Contains(a, "/udp/"+strconv.Itoa(port)+"/") || strings.HasSuffix(a, "/udp/"+strconv.Itoa(port)) {
				return ConfigError{fmt.Errorf("--opendht-addr :%d is the UDP port of --p2p-addr %s too (both default to 4222): move one, e.g. --opendht-addr :4223", port, a)}
			}
		}
	}
	return nil
}

func openDHTPort(cfg *config.Config) int {
	_, p, _ := net.SplitHostPort(cfg.OpenDHTAddr) // checked by config
	port, _ := strconv.Atoi(p)
	return port
}

// openDHT joins the OpenDHT network and attaches the bridge: what it receives enters the hub
// as peer events (routed as libp2p peers' are); with --opendht-publish it is the sink that
// puts this node's shareable events there. It listens only from Start on.
func (n *Node) openDHT(sinkBytes int) error {
	cfg := &n.cfg
	d, err := opendht.Open(openDHTPort(cfg), cfg.OpenDHTBootstrap)
	if err != nil {
		return err
	}
	minSightings := cfg.OpenDHTMinSightings
	if minSightings == 0 {
		minSightings = cfg.P2PMinSightings
	}
	// A gate of its own: OpenDHT's reports never count as a libp2p peer's sighting, nor the
	// reverse. A key counts as known only when this node or a trusted peer saw it.
	gate := trust.New(trust.Policy{MinSightings: minSightings,
		Known: func(ip, number string) bool { return knownFirstHand(context.Background(), n.store, ip, number) }})
	n.dht = opendht.New(opendht.Config{NodeID: n.nodeID, Rate: cfg.OpenDHTRate, Gate: gate,
		Receive: func(e *event.Event) { n.hub.Publish(e) },
		Publish: cfg.OpenDHTPublish, Relay: cfg.OpenDHTRelay, Log: n.log}, d)
	n.onClose("opendht", 10*time.Second, n.dht.Close) // after the hub has put this node's queued events
	if cfg.OpenDHTPublish {
		n.hub.Add(n.dht, hub.Options{Capacity: 1 << 14, MaxBytes: sinkBytes, MaxBatch: 500,
			PeerEvents: false, Accept: Shareable(cfg, n.guards)})
	}
	return nil
}

// relayable is the p2p sink's Accept: this node's shareable events, and with
// --opendht-relay the events OpenDHT brought (no other peer's event is ever published again).
func relayable(cfg *config.Config, share func(*event.Event) bool) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.FromPeer {
			return cfg.OpenDHTRelay && opendht.IsFrom(e) && share(e)
		}
		return share(e)
	}
}

// peersReport is /peers: the libp2p report (-p) with the OpenDHT bridge's beside it, or the
// bridge's alone when -p is off.
func (n *Node) peersReport() any {
	if n.peer == nil {
		return struct {
			OpenDHT *peerinfo.OpenDHT `json:"opendht"`
		}{n.dht.Report()}
	}
	r := n.peer.Report()
	if n.dht != nil {
		r.OpenDHT = n.dht.Report()
	}
	return r
}

// knownFirstHand is known for OpenDHT's gate: seen by this node or a trusted peer.
func knownFirstHand(ctx context.Context, st api.Lookups, ip, number string) bool {
	return knownBy(ctx, st, ip, number, func(a store.Aggregate) bool { return a.Local > 0 || a.TrustedPeers > 0 })
}

func knownBy(ctx context.Context, st api.Lookups, ip, number string, vouched func(store.Aggregate) bool) bool {
	if a, ok, err := st.IP(ctx, ip); ok && err == nil && vouched(a) {
		return true
	}
	if number == "" {
		return false
	}
	a, ok, err := st.Number(ctx, number)
	return ok && err == nil && vouched(a)
}
