// Command external-secrets is ESO's controller entry point, built from the pinned module.
package main

import "github.com/external-secrets/external-secrets/cmd/controller"

func main() { controller.Execute() }
