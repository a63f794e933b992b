# The cheap profile: what the platform costs while nothing trains kept small
# (docs/terraform.md "Idle cost" has the arithmetic). A zonal cluster (its
# control plane is covered by GKE's free tier for one zonal cluster per billing
# account), one small system node, flow logs sampled at 10% over 15 minutes
# without metadata, and a spot L4 pool that scales from zero.
#   cp terraform/examples/cheap.tfvars terraform/terraform.tfvars

project_id = "my-project-id"
region     = "us-central1"
zone       = "us-central1-a"
name       = "jobgen"

master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "office" },
]

system_pool = {
  machine_type = "e2-standard-2"
  min_nodes    = 1
  max_nodes    = 2
  disk_size_gb = 50
}

flow_logs = {
  sampling = 0.1
  interval = "INTERVAL_15_MIN"
  metadata = "EXCLUDE_ALL_METADATA"
}

enable_managed_prometheus = true
enable_dcgm_metrics       = false

gpu_pools = [
  {
    name              = "l4-spot"
    machine_type      = "g2-standard-8"
    accelerator_type  = "nvidia-l4"
    accelerator_count = 1
    max_nodes         = 2
    spot              = true
  },
]

checkpoint_retention_days    = 7
watcher_state_retention_days = 14
registry_keep_recent         = 5
registry_delete_after_days   = 14
