# Two on-demand GPU pools in a regional cluster: L4 nodes in every zone that
# has G2, and A100 nodes in two listed zones. Both scale from zero.
project_id = "my-project-id"
region     = "us-central1"
name       = "jobgen"

master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "office" },
]

enable_dcgm_metrics = true

gpu_pools = [
  {
    name              = "l4"
    machine_type      = "g2-standard-8"
    accelerator_type  = "nvidia-l4"
    accelerator_count = 1
    max_nodes         = 8
  },
  {
    name              = "a100"
    machine_type      = "a2-highgpu-1g"
    accelerator_type  = "nvidia-tesla-a100"
    accelerator_count = 1
    zones             = ["us-central1-a", "us-central1-c"]
    max_nodes         = 4
    local_ssd_count   = 0
  },
]
