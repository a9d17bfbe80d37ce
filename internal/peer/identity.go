// Package peer shares bad-actor events with other dialtrap nodes over libp2p: a persistent
// ed25519 identity, events sealed in signed envelopes, strict checks on everything received,
// and (in node.go) the host, DHT and gossipsub topic that carry them.
package peer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/fsutil"
)

// KeyFile is the file in the data directory that holds the node's private key.
const KeyFile = "node_key"

// LoadKey returns the node's ed25519 key from dir, creating it (mode 0600) on first use, so the
// peer ID stays the same across restarts. A key file others may read is refused: whoever holds
// it can sign events in this node's name.
func LoadKey(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("stat node key %s: %w", path, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("node key %s is readable by others (mode %v): run chmod 600 %s", path, st.Mode().Perm(), path)
		}
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("node key %s is damaged (restore it from a backup, or delete it to get a new peer ID): %w", path, err)
		}
		if k.Type() != crypto.Ed25519 {
			return nil, fmt.Errorf("node key %s is not an ed25519 key", path)
		}
		return k, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read node key %s: %w", path, err)
	}
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("store node key %s (is the data directory writable?): %w", path, err)
	}
	return k, nil
}

// ID returns the peer ID of key.
func ID(key crypto.PrivKey) (libpeer.ID, error) {
	return libpeer.IDFromPrivateKey(key)
}

// ParseIDs parses peer IDs (--p2p-trust).
func ParseIDs(ids []string) ([]libpeer.ID, error) {
	var out []libpeer.ID
	for _, s := range ids {
		id, err := libpeer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a peer ID (a node logs its own at start: p2p: joined peer_id=12D3KooW...): %w", s, err)
		}
		out = append(out, id)
	}
	return out, nil
}
