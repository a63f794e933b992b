# Plans examples/cheap.tfvars (see gpu-pools.tftest.hcl for how it is run).

mock_provider "google" {
  source = "./tests/mocks"
}

run "cheap_example" {
  command = plan

  assert {
    condition     = google_container_cluster.this.location == "us-central1-a"
    error_message = "the cheap profile is a zonal cluster (free-tier control plane)"
  }
  assert {
    condition     = google_container_node_pool.system.node_config[0].machine_type == "e2-standard-2" && google_container_node_pool.system.autoscaling[0].total_min_node_count == 1
    error_message = "the cheap profile keeps one small system node"
  }
  assert {
    condition     = google_container_node_pool.system.location == "us-central1-a" && google_container_node_pool.system.autoscaling[0].total_max_node_count == 2
    error_message = "the system pool of the zonal cluster lives in its one zone, at most 2 nodes"
  }
  assert {
    condition     = google_compute_subnetwork.nodes.log_config[0].flow_sampling == 0.1 && google_compute_subnetwork.nodes.log_config[0].aggregation_interval == "INTERVAL_15_MIN" && google_compute_subnetwork.nodes.log_config[0].metadata == "EXCLUDE_ALL_METADATA"
    error_message = "flow logs are reduced: 10% sampling, 15 minute aggregation, no metadata"
  }
  assert {
    condition     = alltrue([for p in values(output.gpu_node_pools) : p.total_min_node_count == 0 && p.spot])
    error_message = "GPU pools are spot and scale from zero"
  }
  assert {
    condition     = !contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "DCGM")
    error_message = "the cheap profile collects no DCGM metrics"
  }
}
