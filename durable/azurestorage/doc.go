// Package azurestorage is the durable task hub on Azure Storage (or Azurite):
// it implements backend.Backend with the resources, message envelope and
// table layout of DurableTask.AzureStorage, so that existing task hub tools
// (Durable Functions Monitor, Storage Explorer) can read a Stratus hub.
package azurestorage
