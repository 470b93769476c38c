package cliclient

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// ListMembers lists the control-plane members.
func (c *Client) ListMembers(ctx context.Context) ([]cliout.Member, error) {
	resp, err := call(ctx, c, "", c.api.ListMembers, &wasmorchv1.ListMembersRequest{})
	if err != nil {
		return nil, err
	}
	return cliout.Members(resp.GetMembers()), nil
}

// RemoveMember removes a control-plane member from the cluster.
func (c *Client) RemoveMember(ctx context.Context, name string) error {
	_, err := call(ctx, c, "", c.api.RemoveMember, &wasmorchv1.RemoveMemberRequest{Name: name})
	return err
}

// SaveSnapshot writes a snapshot of the cluster's state to path, through a
// temporary file renamed into place once complete: an interrupted save
// never leaves a truncated snapshot under the name asked for. It returns
// the size and sha256 of what it wrote.
func (c *Client) SaveSnapshot(ctx context.Context, path string) (int64, string, error) {
	if err := c.connect(ctx); err != nil {
		return 0, "", err
	}
	stream, err := c.api.Snapshot(ctx, &wasmorchv1.SnapshotRequest{})
	if err != nil {
		return 0, "", c.failure(err, "")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return 0, "", Errorf("choose a writable path", "cannot write the snapshot: %v", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	w := io.MultiWriter(tmp, h)
	var n int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, "", c.failure(err, "")
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return 0, "", Errorf("free some space or choose another path", "cannot write the snapshot: %v", err)
		}
		n += int64(len(chunk.GetData()))
	}
	if n == 0 {
		return 0, "", Errorf("check the server's log", "the server sent an empty snapshot")
	}
	if err := tmp.Sync(); err != nil {
		return 0, "", Errorf("free some space or choose another path", "cannot write the snapshot: %v", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, "", Errorf("free some space or choose another path", "cannot write the snapshot: %v", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, "", Errorf("choose a writable path", "cannot write the snapshot: %v", err)
	}
	return n, fmt.Sprintf("sha256:%x", h.Sum(nil)), nil
}
