"""`herdcast deploy`: power a fleet on through its BMCs, image it, boot it into its new system.

The pieces: inventory (the TOML file into frozen `Node`s, every mistake one line naming the
node and the key), bmc (one small interface: next boot from the network once, power on or
cycle, say the power state; Redfish through sushy, IPMI through pyghmi, Wake-on-LAN for
machines with neither), arming (each node's per-MAC boot files: armed = receive, then
reboot; disarmed = boot the local disk) and flow (arm, power, serve with the sender's
`--serve` engine, disarm each node as its digest agrees, report by inventory name).

sushy, pyghmi and the builder are imported inside the functions that use them: a node's
frozen agent imports every agent module, and none of the three is in it.
"""
