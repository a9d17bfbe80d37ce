package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dialtrap/dialtrap/internal/fsutil"
)

// stateVersion is the layout of the checkpoint file; another one is refused.
const stateVersion = 1

// migrateState is the checkpoint of a migration: how far it copied into which store. It is
// rewritten after every committed batch. A kill between a commit and the rewrite leaves it
// one batch behind, which the next run copies again: writes are idempotent by event_uuid, so
// nothing counts twice, and Copied counts each event once.
type migrateState struct {
	Version int `json:"version"`
	// Source and Destination are the stores' identities (path or server and database, and
	// epoch; never a password): a checkpoint of another pair is refused.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// The last event copied and committed, in the source's (event_timestamp, id) order.
	Since   string `json:"since"`
	AfterID int64  `json:"after_id"`
	Copied  int64  `json:"copied"` // events read from the source and committed, in all runs
	Added   int64  `json:"added"`  // of those, new in the destination (a kill may lose a batch's count)
	Weight  int64  `json:"weight"` // probes the copied events stand for (event.Weight)
	// DestinationWasEmpty: the destination held no event when the first run started; it must
	// then end with exactly the copied events.
	DestinationWasEmpty bool   `json:"destination_was_empty"`
	Started             string `json:"started"`
	Updated             string `json:"updated,omitempty"`
}

// loadState reads the checkpoint at path; nil when there is none.
func loadState(path string) (*migrateState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the checkpoint: %w (give a readable --state FILE)", err)
	}
	var st migrateState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("checkpoint %s is damaged (%v): remove it, or run with --restart", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("checkpoint %s has version %d, this dialtrap writes %d: finish the migration with the dialtrap that began it, or run with --restart", path, st.Version, stateVersion)
	}
	return &st, nil
}

// saveState replaces the checkpoint atomically and durably: a temporary file synced, renamed
// over it, and the directory synced, so that after a crash the file is the old checkpoint or
// the new one, never a part.
func saveState(path string, st *migrateState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save the checkpoint: %w (give a writable --state FILE)", err)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("save the checkpoint: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("save the checkpoint: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
