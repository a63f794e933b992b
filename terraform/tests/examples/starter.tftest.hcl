# Plans terraform.tfvars.example, the file users copy to terraform.tfvars:
#   terraform test -test-directory=tests/examples -filter=tests/examples/starter.tftest.hcl -var-file=terraform.tfvars.example

mock_provider "google" {
  source = "./tests/mocks"
}

run "starter_tfvars" {
  command = plan

  assert {
    condition     = jsonencode(keys(output.gpu_node_pools)) == jsonencode(["l4"])
    error_message = "the starter file has one L4 pool"
  }
  assert {
    condition     = output.gpu_node_pools["l4"].total_min_node_count == 0 && output.gpu_node_pools["l4"].accelerator_type == "nvidia-l4"
    error_message = "the L4 pool scales from zero"
  }
  assert {
    condition     = google_container_cluster.this.deletion_protection && contains(tolist(google_container_cluster.this.monitoring_config[0].enable_components), "DCGM")
    error_message = "the starter file keeps deletion protection and collects DCGM metrics"
  }
  assert {
    condition     = module.bucket_checkpoints.settings.delete_after_days == 30
    error_message = "checkpoints expire after 30 days"
  }
}
