package main

// durableWorkloads returns the durable engine's workloads.
func durableWorkloads() []workload { return nil }
