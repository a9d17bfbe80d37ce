package sqlite

import (
	"context"
	"fmt"
)

// PruneEvents deletes at most limit raw events stamped before before (an event_timestamp),
// oldest first, and says how many went: retention (--retention). The aggregates the lookups,
// feeds and statistics read keep every count: they are kept apart from the events. One chunk
// is one short transaction on the writer, so capture's batches go on between chunks; the
// caller loops while a whole chunk went.
func (s *Store) PruneEvents(ctx context.Context, before string, limit int) (int64, error) {
	if s.w == nil {
		return 0, fmt.Errorf("database %s is open read-only", s.path)
	}
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	res, err := s.w.ExecContext(ctx, `DELETE FROM events WHERE id IN
		(SELECT id FROM events WHERE event_timestamp < ? ORDER BY event_timestamp LIMIT ?)`, before, limit)
	if err != nil {
		return 0, fmt.Errorf("delete events before %s from %s: %w", before, s.path, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete events before %s from %s: %w", before, s.path, err)
	}
	if n > 0 {
		// Give back up to what the chunk freed (a database made before auto_vacuum was set
		// keeps its free pages for the next events instead).
		if _, err := s.w.ExecContext(ctx, `PRAGMA incremental_vacuum(4096)`); err != nil {
			return n, fmt.Errorf("return freed pages of %s: %w", s.path, err)
		}
	}
	return n, nil
}
