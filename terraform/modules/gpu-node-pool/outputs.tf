output "name" {
  description = "Node pool name."
  value       = google_container_node_pool.this.name
}

output "node_locations" {
  description = "Zones the pool's nodes run in."
  value       = local.node_locations
}

output "pool" {
  description = "The pool's capacity settings as planned: autoscaling, taints, accelerator, provisioning model and placement."
  value = {
    name                 = google_container_node_pool.this.name
    machine_type         = google_container_node_pool.this.node_config[0].machine_type
    node_locations       = local.node_locations
    total_min_node_count = google_container_node_pool.this.autoscaling[0].total_min_node_count
    total_max_node_count = google_container_node_pool.this.autoscaling[0].total_max_node_count
    location_policy      = google_container_node_pool.this.autoscaling[0].location_policy
    auto_repair          = google_container_node_pool.this.management[0].auto_repair
    accelerator_type     = google_container_node_pool.this.node_config[0].guest_accelerator[0].type
    accelerator_count    = google_container_node_pool.this.node_config[0].guest_accelerator[0].count
    gpu_driver_version   = google_container_node_pool.this.node_config[0].guest_accelerator[0].gpu_driver_installation_config[0].gpu_driver_version
    taints               = google_container_node_pool.this.node_config[0].taint
    spot                 = google_container_node_pool.this.node_config[0].spot
    flex_start           = var.flex_start
    reservation_affinity = google_container_node_pool.this.node_config[0].reservation_affinity[0].consume_reservation_type
    queued_provisioning  = length(google_container_node_pool.this.queued_provisioning) > 0 && try(google_container_node_pool.this.queued_provisioning[0].enabled, false)
    placement_policy     = try(google_container_node_pool.this.placement_policy[0].type, "NONE")
    workload_metadata    = google_container_node_pool.this.node_config[0].workload_metadata_config[0].mode
    secure_boot          = google_container_node_pool.this.node_config[0].shielded_instance_config[0].enable_secure_boot
  }
}
