//go:build !opendht

package opendht

// Built says whether this binary can join an OpenDHT network: not this one.
const Built = false

// Open fails: the default build links no C library.
func Open(int, []string) (DHT, error) { return nil, ErrNotBuilt }
