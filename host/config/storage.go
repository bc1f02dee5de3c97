package config

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// Well-known Azurite development account.
const (
	DevAccountName = "devstoreaccount1"
	DevAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// StorageAccount is a parsed Azure Storage connection string.
type StorageAccount struct {
	// Name is the account name.
	Name string
	// Key is the base64 shared key.
	Key string
	// BlobURL, QueueURL and TableURL are the service endpoints, without a trailing slash.
	BlobURL, QueueURL, TableURL string
}

// ConnectionString renders the account as a full connection string.
func (a StorageAccount) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;QueueEndpoint=%s;TableEndpoint=%s;",
		a.Name, a.Key, a.BlobURL, a.QueueURL, a.TableURL)
}

// ParseStorageConnectionString parses "UseDevelopmentStorage=true" (optionally
// with DevelopmentStorageProxyUri) and full account connection strings, with
// or without explicit endpoints.
func ParseStorageConnectionString(cs string) (StorageAccount, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(cs, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return StorageAccount{}, fmt.Errorf("connection string: %q is not key=value", redactPart(part))
		}
		kv[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	if strings.EqualFold(kv["usedevelopmentstorage"], "true") {
		host := "http://127.0.0.1"
		if p := kv["developmentstorageproxyuri"]; p != "" {
			u, err := url.Parse(p)
			if err != nil || u.Hostname() == "" {
				return StorageAccount{}, fmt.Errorf("connection string: DevelopmentStorageProxyUri %q is not a URL", p)
			}
			host = u.Scheme + "://" + u.Hostname()
		}
		return StorageAccount{
			Name:     DevAccountName,
			Key:      DevAccountKey,
			BlobURL:  host + ":10000/" + DevAccountName,
			QueueURL: host + ":10001/" + DevAccountName,
			TableURL: host + ":10002/" + DevAccountName,
		}, nil
	}
	a := StorageAccount{Name: kv["accountname"], Key: kv["accountkey"]}
	if a.Name == "" {
		return StorageAccount{}, fmt.Errorf("connection string: AccountName is missing")
	}
	if a.Key == "" {
		return StorageAccount{}, fmt.Errorf("connection string: AccountKey is missing (only shared-key connections are supported)")
	}
	if _, err := base64.StdEncoding.DecodeString(a.Key); err != nil {
		return StorageAccount{}, fmt.Errorf("connection string: AccountKey is not base64")
	}
	proto := kv["defaultendpointsprotocol"]
	if proto == "" {
		proto = "https"
	}
	suffix := kv["endpointsuffix"]
	if suffix == "" {
		suffix = "core.windows.net"
	}
	endpoint := func(key, service string) (string, error) {
		if v := kv[key]; v != "" {
			u, err := url.Parse(v)
			if err != nil || u.Scheme == "" || u.Host == "" {
				return "", fmt.Errorf("connection string: %s %q is not an absolute URL", key, v)
			}
			return strings.TrimRight(v, "/"), nil
		}
		return fmt.Sprintf("%s://%s.%s.%s", proto, a.Name, service, suffix), nil
	}
	var err error
	if a.BlobURL, err = endpoint("blobendpoint", "blob"); err != nil {
		return StorageAccount{}, err
	}
	if a.QueueURL, err = endpoint("queueendpoint", "queue"); err != nil {
		return StorageAccount{}, err
	}
	if a.TableURL, err = endpoint("tableendpoint", "table"); err != nil {
		return StorageAccount{}, err
	}
	return a, nil
}

func redactPart(p string) string {
	if len(p) > 24 {
		return p[:24] + "…"
	}
	return p
}
