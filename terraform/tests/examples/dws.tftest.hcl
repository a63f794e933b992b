# Plans examples/dws.tfvars (see gpu-pools.tftest.hcl for how it is run).

mock_provider "google" {
  source = "./tests/mocks"
}

override_data {
  target = module.gpu_pool["h100-dws"].data.google_compute_machine_types.zone
  values = {
    machine_types = [{ name = "a3-highgpu-8g", guest_cpus = 208, memory_mb = 1916928, accelerators = [{ guest_accelerator_type = "nvidia-h100-80gb", guest_accelerator_count = 8 }] }]
  }
}

run "dws_example" {
  command = plan

  assert {
    condition     = output.gpu_node_pools["h100-dws"].queued_provisioning && output.gpu_node_pools["h100-dws"].flex_start
    error_message = "the H100 pool uses queued provisioning with flex-start"
  }
  assert {
    condition     = output.gpu_node_pools["h100-dws"].reservation_affinity == "NO_RESERVATION" && output.gpu_node_pools["h100-dws"].total_min_node_count == 0 && !output.gpu_node_pools["h100-dws"].spot
    error_message = "queued provisioning: no reservation, min 0, not spot"
  }
  assert {
    condition     = !output.gpu_node_pools["h100-dws"].auto_repair && output.gpu_node_pools["h100-dws"].location_policy == "ANY"
    error_message = "the DWS pool has auto-repair off and location policy ANY"
  }
  assert {
    condition     = output.gpu_node_pools["h100-dws"].accelerator_count == 8
    error_message = "a3-highgpu-8g has 8 H100s"
  }
  assert {
    condition     = !output.gpu_node_pools["l4"].queued_provisioning && output.gpu_node_pools["l4"].auto_repair
    error_message = "the L4 pool is an ordinary on-demand pool"
  }
}
