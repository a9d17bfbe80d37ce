package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// FillTrusted sets Trusted on the peer events of batch, as read back by Recent or Events,
// for a copy into another store (dialtrap migrate), as the SQLite store's FillTrusted does:
// trust is kept per (list, key, peer) in key_peers, and a peer event counts as trusted when
// its peer is recorded trusted for its source IP and, if it has a number, for that number.
func (s *Store) FillTrusted(ctx context.Context, batch []*event.Event) error {
	type keyPeer struct {
		list      store.List
		key, peer string
	}
	trusted := map[keyPeer]bool{}
	lookup := func(kp keyPeer) (bool, error) {
		if t, ok := trusted[kp]; ok {
			return t, nil
		}
		var t bool
		err := s.pool.QueryRow(ctx, `SELECT trusted FROM key_peers WHERE list = $1 AND key = $2 AND peer_id = $3`,
			int(kp.list), kp.key, kp.peer).Scan(&t)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("read peer trust from %s: %w", s.where, err)
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
