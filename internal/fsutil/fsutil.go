// Package fsutil holds the one file-system pattern several packages need: writing a small
// file (node id, node key, certificate) so that a crash never leaves half of it behind.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic writes data to path with mode perm through a synced temporary file in the
// same directory and a rename: readers see the old file or the whole new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
