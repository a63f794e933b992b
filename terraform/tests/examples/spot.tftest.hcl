# Plans examples/spot.tfvars (see gpu-pools.tftest.hcl for how it is run).

mock_provider "google" {
  source = "./tests/mocks"
}

override_data {
  target = module.gpu_pool["t4-spot"].data.google_compute_machine_types.zone
  values = {
    machine_types = [{ name = "n1-standard-8", guest_cpus = 8, memory_mb = 30720, accelerators = [] }]
  }
}

override_data {
  target = module.gpu_pool["a100-spot-compact"].data.google_compute_machine_types.zone
  values = {
    machine_types = [{ name = "a2-highgpu-2g", guest_cpus = 24, memory_mb = 174080, accelerators = [{ guest_accelerator_type = "nvidia-tesla-a100", guest_accelerator_count = 2 }] }]
  }
}

run "spot_example" {
  command = plan

  assert {
    condition     = google_container_cluster.this.location == "us-central1-a"
    error_message = "the spot example is a zonal cluster"
  }
  assert {
    condition     = alltrue([for p in values(output.gpu_node_pools) : p.spot && p.reservation_affinity == "NO_RESERVATION" && p.total_min_node_count == 0])
    error_message = "every pool is spot, reserves nothing and scales from zero"
  }
  assert {
    condition     = output.gpu_node_pools["a100-spot-compact"].placement_policy == "COMPACT" && output.gpu_node_pools["a100-spot-compact"].node_locations == tolist(["us-central1-a"])
    error_message = "the A100 pool is COMPACT in one zone"
  }
  assert {
    condition     = output.gpu_node_pools["t4-spot"].accelerator_type == "nvidia-tesla-t4" && output.gpu_node_pools["t4-spot"].machine_type == "n1-standard-8"
    error_message = "the T4 pool attaches a T4 to N1"
  }
  assert {
    condition     = !google_container_cluster.this.deletion_protection
    error_message = "the spot example turns deletion protection off"
  }
}
