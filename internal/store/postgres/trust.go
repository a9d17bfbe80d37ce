package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// FillTrusted sets Trusted on the peer events of batch from key_peers (store.FillTrusted),
// for dialtrap migrate.
func (s *Store) FillTrusted(ctx context.Context, batch []*event.Event) error {
	return store.FillTrusted(batch, func(l store.List, key, peer string) (bool, error) {
		var t bool
		err := s.pool.QueryRow(ctx, `SELECT trusted FROM key_peers WHERE list = $1 AND key = $2 AND peer_id = $3`,
			int(l), key, peer).Scan(&t)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return false, fmt.Errorf("read peer trust from %s: %w", s.where, err)
		}
		return t, nil
	})
}
