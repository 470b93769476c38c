// Package modcache keeps the worker's modules on disk by content digest
// (<dir>/<hex>.wasm). A missing module is fetched once however many instances
// ask for it at the same time, its sha256 verified while it streams into a
// temporary file, and only then renamed into place: the cache never holds
// bytes that do not match their name.
package modcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// ErrDigestMismatch is returned when fetched bytes do not hash to the digest
// they were fetched by.
var ErrDigestMismatch = errors.New("digest mismatch")

// Fetch writes the bytes of the blob named digest to w.
type Fetch func(ctx context.Context, digest string, w io.Writer) error

const (
	digestPrefix = "sha256:"
	fileSuffix   = ".wasm"
	tmpSuffix    = ".tmp"
)

// Cache is a directory of verified modules.
type Cache struct {
	dir   string
	fetch Fetch
	group singleflight.Group

	mu       sync.Mutex
	verified map[string]bool // hex digests whose file was checked by this process
}

// New returns a cache over dir that fills misses with fetch. It removes the
// temporary files an interrupted fetch may have left.
func New(dir string, fetch Fetch) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("modcache: %w", err)
	}
	leftovers, err := filepath.Glob(filepath.Join(dir, "*"+tmpSuffix))
	if err != nil {
		return nil, fmt.Errorf("modcache: %w", err)
	}
	for _, p := range leftovers {
		_ = os.Remove(p) // Best effort: a stale temp file only wastes space.
	}
	return &Cache{dir: dir, fetch: fetch, verified: map[string]bool{}}, nil
}

// ParseDigest checks that digest is "sha256:<64 lower-case hex>" and returns
// the hex part.
func ParseDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, digestPrefix)
	if !ok || len(h) != sha256.Size*2 || strings.ToLower(h) != h {
		return "", errdefs.Invalidf("module digest %q: want sha256:<64 lower-case hex>", digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", errdefs.Invalidf("module digest %q: want sha256:<64 lower-case hex>", digest)
	}
	return h, nil
}

// Path returns where the module named digest is (or would be) kept.
func (c *Cache) Path(digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return c.path(h), nil
}

func (c *Cache) path(h string) string { return filepath.Join(c.dir, h+fileSuffix) }

// Get returns the path of the verified module named digest, fetching it if
// it is not cached. Concurrent calls for one digest share one fetch.
func (c *Cache) Get(ctx context.Context, digest string) (string, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return "", err
	}
	path := c.path(h)
	if c.isVerified(h) {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		c.setVerified(h, false)
	}
	// The shared fetch runs under the first caller's context; if that caller
	// gives up, the others try once more under their own.
	for attempt := 0; ; attempt++ {
		ch := c.group.DoChan(h, func() (any, error) { return nil, c.fill(ctx, digest, h, path) })
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-ch:
			if r.Err == nil {
				return path, nil
			}
			canceled := errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, context.DeadlineExceeded)
			if canceled && ctx.Err() == nil && attempt == 0 {
				continue
			}
			return "", r.Err
		}
	}
}

// fill makes path hold the verified bytes of digest.
func (c *Cache) fill(ctx context.Context, digest, h, path string) error {
	if c.isVerified(h) {
		return nil
	}
	// A file from an earlier run is trusted once it hashes right again.
	if got, err := hashFile(path); err == nil {
		if got == h {
			c.setVerified(h, true)
			return nil
		}
		_ = os.Remove(path) // Corrupt on disk: fetch it afresh.
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}

	tmp, err := os.CreateTemp(c.dir, h+".*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = tmp.Close()           // May be closed already.
			_ = os.Remove(tmp.Name()) // Don't leave unverified bytes behind.
		}
	}()
	sum := sha256.New()
	if err := c.fetch(ctx, digest, io.MultiWriter(tmp, sum)); err != nil {
		return fmt.Errorf("modcache: fetching module %s: %w", digest, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		return fmt.Errorf("modcache: fetching module %s: %w: the bytes hash to sha256:%s", digest, ErrDigestMismatch, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("modcache: module %s: %w", digest, err)
	}
	renamed = true
	c.setVerified(h, true)
	return nil
}

func (c *Cache) isVerified(h string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified[h]
}

func (c *Cache) setVerified(h string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.verified[h] = true
	} else {
		delete(c.verified, h)
	}
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}
