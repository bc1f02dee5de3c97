package azurestorage

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf16"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/stratus-dev/stratus/bindings"
)

// Size limits past which payloads spill to gzip blobs in the large-messages
// container, as DurableTask.AzureStorage does.
const (
	maxMessageBytes  = 45 * 1024 // queue message body (UTF-8 JSON)
	maxPropertyBytes = 60 * 1024 // one table property, measured in UTF-16
)

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func gunzip(b []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("gunzip: %w", err)
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (b *Backend) uploadLarge(ctx context.Context, name string, data []byte) error {
	_, err := b.blob.UploadBuffer(ctx, b.names.largeContainer, name, gz(data), nil)
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", b.names.largeContainer, name, err)
	}
	return nil
}

func (b *Backend) downloadLarge(ctx context.Context, name string) ([]byte, error) {
	// Instances rows hold the blob's URL; history columns hold the name.
	if i := strings.Index(name, "/"+b.names.largeContainer+"/"); i >= 0 {
		name = name[i+len(b.names.largeContainer)+2:]
	}
	res, err := b.blob.DownloadStream(ctx, b.names.largeContainer, name, nil)
	if err != nil {
		return nil, fmt.Errorf("download %s/%s: %w", b.names.largeContainer, name, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("download %s/%s: %w", b.names.largeContainer, name, err)
	}
	return gunzip(raw)
}

func utf16Len(s string) int {
	if len(s) < maxPropertyBytes/4 {
		return len(s) * 2
	}
	return len(utf16.Encode([]rune(s))) * 2
}

// spillable are the History columns that may be moved to blobs: those of
// DurableTask.AzureStorage plus Data and this package's sentinel columns.
var spillable = []string{"Name", "Input", "Result", "Output", "Reason", "Details", "Correlation", "FailureDetails", "Tags", "Data",
	"PendingOutbound", "RecentMessageIds", "CustomStatus"}

// spillRow moves oversized properties of a History (or sentinel) row to
// blobs and points at them with <Prop>BlobName.
func (b *Backend) spillRow(ctx context.Context, pk, rk, eventType string, p map[string]any) error {
	for _, k := range spillable {
		s, ok := p[k].(string)
		if !ok || utf16Len(s) <= maxPropertyBytes {
			continue
		}
		name := fmt.Sprintf("%s/history-%s-%s-%s-%s.json.gz", pk, rk, eventType, bindings.NewGUID()[:8], k)
		if err := b.uploadLarge(ctx, name, []byte(s)); err != nil {
			return err
		}
		p[k] = ""
		p[k+"BlobName"] = name
	}
	return nil
}

// inflateRow replaces <Prop>BlobName columns by the blob contents.
func (b *Backend) inflateRow(ctx context.Context, p map[string]any) error {
	for k, v := range p {
		if !strings.HasSuffix(k, "BlobName") {
			continue
		}
		name, _ := v.(string)
		if name == "" {
			continue
		}
		data, err := b.downloadLarge(ctx, name)
		if err != nil {
			return err
		}
		p[strings.TrimSuffix(k, "BlobName")] = string(data)
	}
	return nil
}

// blobURL is the URL Instances rows store in place of a large Input/Output.
func (b *Backend) blobURL(name string) string {
	return strings.TrimRight(b.clients.Account.BlobURL, "/") + "/" + b.names.largeContainer + "/" + name
}

func (b *Backend) isLargeURL(s string) bool {
	return strings.HasPrefix(s, strings.TrimRight(b.clients.Account.BlobURL, "/")+"/"+b.names.largeContainer+"/")
}

// instanceValue returns an Instances column value for v: v itself, or the
// URL of a blob holding it when it is over the property limit.
func (b *Backend) instanceValue(ctx context.Context, pk, executionID, prop, v string) (string, error) {
	if utf16Len(v) <= maxPropertyBytes {
		return v, nil
	}
	name := fmt.Sprintf("%s/instance-%s-%s.json.gz", pk, executionID, prop)
	if err := b.uploadLarge(ctx, name, []byte(v)); err != nil {
		return "", err
	}
	return b.blobURL(name), nil
}

// readInstanceValue inflates an Instances column that holds a blob URL.
func (b *Backend) readInstanceValue(ctx context.Context, v string) (string, error) {
	if !b.isLargeURL(v) {
		return v, nil
	}
	data, err := b.downloadLarge(ctx, v)
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// deleteLargeBlobs deletes the large-message blobs of one instance: the
// names under "{escaped id}/" (with the slash, so that purging "abc" leaves
// "abcd" alone).
func (b *Backend) deleteLargeBlobs(ctx context.Context, pk string) (int, error) {
	prefix := pk + "/"
	pager := b.blob.NewListBlobsFlatPager(b.names.largeContainer, &azblob.ListBlobsFlatOptions{Prefix: &prefix})
	n := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("list %s/%s: %w", b.names.largeContainer, prefix, err)
		}
		for _, it := range page.Segment.BlobItems {
			if _, err := b.blob.DeleteBlob(ctx, b.names.largeContainer, *it.Name, nil); err != nil && !isStatus(err, http.StatusNotFound) {
				return n, fmt.Errorf("delete %s/%s: %w", b.names.largeContainer, *it.Name, err)
			}
			n++
		}
	}
	return n, nil
}
