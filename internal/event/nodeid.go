package event

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/fsutil"
)

// NodeIDFile is the file in the data directory that holds the node's created_by_node_id.
const NodeIDFile = "node_id"

// LoadNodeID returns the node id stored in dir, creating it on first use so that
// created_by_node_id stays the same across restarts.
func LoadNodeID(dir string) (string, error) {
	path := filepath.Join(dir, NodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if _, perr := uuid.Parse(id); perr != nil {
			return "", fmt.Errorf("node id file %s holds %q, not a UUID: fix or delete it (a new id is then made): %w", path, id, perr)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read node id %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("create data directory %s: %w", dir, err)
	}
	id := uuid.NewString()
	if err := fsutil.WriteFileAtomic(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store node id %s (is the data directory writable?): %w", path, err)
	}
	return id, nil
}
