package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// FillTrusted sets Trusted on the peer events of batch, as read back by Recent or Events,
// for a copy into another store (dialtrap migrate). Trust is not kept per event but per
// (list, key, peer) in key_peers; a peer event counts as trusted when its peer is recorded
// trusted for its source IP and, if it has a number, for that number too. Written again in
// order, the events then rebuild the same key_peers, so the copy's trusted-peer counts and
// trusted feeds are the source's. Verified sightings from trusted peers are exact unless a
// peer's trust changed while it reported one key: its earlier, untrusted events of that key
// then count as trusted too.
func (s *Store) FillTrusted(ctx context.Context, batch []*event.Event) error {
	trusted := map[keyPeer]bool{}
	lookup := func(kp keyPeer) (bool, error) {
		if t, ok := trusted[kp]; ok {
			return t, nil
		}
		var t bool
		err := s.bulk.QueryRowContext(ctx, `SELECT trusted FROM key_peers WHERE list = ? AND key = ? AND peer_id = ?`,
			int(kp.list), kp.key, kp.peer).Scan(&t)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("read peer trust from %s: %w", s.path, err)
		}
		trusted[kp] = t
		return t, nil
	}
	for _, e := range batch {
		if !e.FromPeer || e.Peer == "" {
			continue
		}
		t, err := lookup(keyPeer{store.IPAddresses, e.SourceIP, e.Peer})
		if err != nil {
			return err
		}
		if t && store.CountsAsNumber(e.CalledNumber) {
			if t, err = lookup(keyPeer{store.CalledNumbers, e.CalledNumber, e.Peer}); err != nil {
				return err
			}
		}
		e.Trusted = t
	}
	return nil
}
