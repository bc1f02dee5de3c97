package storage

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
)

// BlobOut is a blob output binding (function.json type "blob", direction out).
type BlobOut struct {
	handle
}

// BlobIn is a blob input binding (function.json type "blob", direction in).
type BlobIn struct {
	handle
}

var (
	_ bindings.Binder = (*BlobOut)(nil)
	_ bindings.Binder = (*BlobIn)(nil)
)

// BlobOutput declares a blob output binding; path is "container/blob" and
// may use binding expressions ("processed/{name}.txt").
func BlobOutput(name, path string, opts ...Option) *BlobOut {
	return &BlobOut{handle: newHandle("blob", bindings.Out, name, map[string]any{"path": path}, opts)}
}

// BlobInput declares a blob input binding; path is "container/blob" and may
// use binding expressions.
func BlobInput(name, path string, opts ...Option) *BlobIn {
	return &BlobIn{handle: newHandle("blob", bindings.In, name, map[string]any{"path": path}, opts)}
}

// Write buffers the blob's content; it is uploaded (replacing any existing
// blob, creating the container if missing) only after the handler succeeded.
// Several writes to the same path keep the last.
func (b *BlobOut) Write(ctx context.Context, data []byte) error {
	if err := b.ready(); err != nil {
		return err
	}
	inv, err := invocation(ctx)
	if err != nil {
		return err
	}
	container, blobName, err := b.path(ctx)
	if err != nil {
		return err
	}
	c := b.clients
	data = append([]byte(nil), data...)
	inv.Defer(registry.PendingFunc(func(ctx context.Context) error {
		if err := UploadBlob(ctx, c.Blob, container, blobName, data); err != nil {
			return err
		}
		NotifierFor(c).Publish(BlobTopic(container), blobName)
		return nil
	}))
	return nil
}

// WriteString is Write for text.
func (b *BlobOut) WriteString(ctx context.Context, s string) error { return b.Write(ctx, []byte(s)) }

// Read downloads the blob now. A missing blob (or container) is an error
// wrapping [ErrNotFound].
func (b *BlobIn) Read(ctx context.Context) ([]byte, error) {
	if err := b.ready(); err != nil {
		return nil, err
	}
	container, blobName, err := b.path(ctx)
	if err != nil {
		return nil, err
	}
	data, err := DownloadBlob(ctx, b.clients.Blob, container, blobName)
	if err != nil {
		return nil, fmt.Errorf("blob binding %q: %w", b.md.Name, err)
	}
	return data, nil
}

// ReadString is Read for text.
func (b *BlobIn) ReadString(ctx context.Context) (string, error) {
	data, err := b.Read(ctx)
	return string(data), err
}

func (h *handle) path(ctx context.Context) (container, blobName string, err error) {
	p, err := h.expand(ctx, h.md.String("path"))
	if err != nil {
		return "", "", err
	}
	container, blobName, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !ok || container == "" || blobName == "" {
		return "", "", fmt.Errorf("blob binding %q: path %q is not container/blob", h.md.Name, p)
	}
	return container, blobName, nil
}

// UploadBlob writes a block blob, creating the container when it does not exist.
func UploadBlob(ctx context.Context, c *azblob.Client, container, blobName string, data []byte) error {
	_, err := c.UploadBuffer(ctx, container, blobName, data, nil)
	if ErrorCode(err) == "ContainerNotFound" || (IsNotFound(err) && ErrorCode(err) == "") {
		if err = CreateContainer(ctx, c, container); err != nil {
			return err
		}
		_, err = c.UploadBuffer(ctx, container, blobName, data, nil)
	}
	if err != nil {
		return fmt.Errorf("upload blob %s/%s: %w", container, blobName, err)
	}
	return nil
}

// DownloadBlob reads a whole blob; a missing blob or container wraps [ErrNotFound].
func DownloadBlob(ctx context.Context, c *azblob.Client, container, blobName string) ([]byte, error) {
	res, err := c.DownloadStream(ctx, container, blobName, nil)
	if IsNotFound(err) {
		return nil, fmt.Errorf("blob %s/%s: %w", container, blobName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("download blob %s/%s: %w", container, blobName, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("download blob %s/%s: %w", container, blobName, err)
	}
	return data, nil
}

// CreateContainer creates a container; an existing one is not an error.
func CreateContainer(ctx context.Context, c *azblob.Client, container string) error {
	if _, err := c.CreateContainer(ctx, container, nil); err != nil && !IsConflict(err) {
		return fmt.Errorf("create container %s: %w", container, err)
	}
	return nil
}
