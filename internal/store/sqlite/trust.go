package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// FillTrusted sets Trusted on the peer events of batch from key_peers (store.FillTrusted),
// for dialtrap migrate.
func (s *Store) FillTrusted(ctx context.Context, batch []*event.Event) error {
	return store.FillTrusted(batch, func(l store.List, key, peer string) (bool, error) {
		var t bool
		err := s.bulk.QueryRowContext(ctx, `SELECT trusted FROM key_peers WHERE list = ? AND key = ? AND peer_id = ?`,
			int(l), key, peer).Scan(&t)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("read peer trust from %s: %w", s.path, err)
		}
		return t, nil
	})
}
