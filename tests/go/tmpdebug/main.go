package main

import (
	"fmt"
	"time"

	"github.com/IBM/sarama"
)

func main() {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.MaxVersion
	client, _ := sarama.NewClient([]string{"127.0.0.1:38615"}, cfg)
	t := time.Now()
	step := func(s string) { fmt.Println(s, time.Since(t)); t = time.Now() }
	group := fmt.Sprintf("dbg-%d", time.Now().UnixNano())
	om, err := sarama.NewOffsetManagerFromClient(group, client)
	step(fmt.Sprint("om ", err))
	pom, err := om.ManagePartition("fg4-commits", 1)
	step(fmt.Sprint("manage ", err))
	pom.MarkOffset(5, "x")
	om.Commit()
	step("commit")
	pom.Close()
	step("pom close")
	om.Close()
	step("om close")
}
