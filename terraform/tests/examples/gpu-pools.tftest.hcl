# Plans examples/gpu-pools.tfvars. Run by hack/terraform/test.sh as
#   terraform test -test-directory=tests/examples -filter=tests/examples/gpu-pools.tftest.hcl -var-file=examples/gpu-pools.tfvars

mock_provider "google" {
  source = "./tests/mocks"
}

override_data {
  target = module.gpu_pool["a100"].data.google_compute_machine_types.zone
  values = {
    machine_types = [{ name = "a2-highgpu-1g", guest_cpus = 12, memory_mb = 87040, accelerators = [{ guest_accelerator_type = "nvidia-tesla-a100", guest_accelerator_count = 1 }] }]
  }
}

run "gpu_pools_example" {
  command = plan

  assert {
    condition     = jsonencode(keys(output.gpu_node_pools)) == jsonencode(["a100", "l4"])
    error_message = "the example has an a100 and an l4 pool"
  }
  assert {
    condition = alltrue([for p in values(output.gpu_node_pools) :
    p.total_min_node_count == 0 && jsonencode([for t in p.taints : "${t.key}=${t.value}:${t.effect}"]) == jsonencode(["nvidia.com/gpu=present:NO_SCHEDULE"])])
    error_message = "every pool scales from zero and carries the GPU taint"
  }
  assert {
    condition     = output.gpu_node_pools["a100"].node_locations == tolist(["us-central1-a", "us-central1-c"]) && output.gpu_node_pools["a100"].accelerator_type == "nvidia-tesla-a100"
    error_message = "the A100 pool runs in its two listed zones"
  }
  assert {
    condition     = length(output.gpu_node_pools["l4"].node_locations) == 4
    error_message = "the L4 pool runs in every zone that offers G2 (all four in the mock)"
  }
  assert {
    condition     = alltrue([for p in values(output.gpu_node_pools) : !p.spot && !p.queued_provisioning])
    error_message = "the example's pools are on-demand"
  }
  assert {
    condition     = contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "DCGM")
    error_message = "the example collects DCGM metrics"
  }
}
